// C entry points for buffers. Validation (handles, bounds, dtypes, streams)
// happens here once; backends only ever see in-range, non-empty requests.
#include <vector>

#include "device.h"
#include "dtype.h"
#include "guard.h"

using fm::Buffer;
using fm::Device;
using fm::fail;
using fm::guard;
using fm::require_out;
using fm::Stream;

namespace {

// The stream's backend context, or null for a synchronous call. The stream
// must belong to `device`.
std::shared_ptr<Stream> resolve_stream(fm_stream stream, const Device &device) {
    if (stream == 0) return nullptr;
    auto resolved = fm::lookup<Stream>(stream, "stream");
    if (resolved->device().get() != &device) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'stream' belongs to ",
             resolved->device()->label(), ", the buffer to ", device.label());
    }
    return resolved;
}

void *stream_ctx(const std::shared_ptr<Stream> &stream) { return stream ? stream->ctx() : nullptr; }

void check_range(const Buffer &buffer, size_t offset, size_t count, const char *buffer_name) {
    if (offset > buffer.count() || count > buffer.count() - offset) {
        fail(FM_ERR_OUT_OF_RANGE, "argument 'count': ", buffer_name, " offset ", offset,
             " + count ", count, " exceeds the buffer of ", buffer.count(), " elements");
    }
}

}  // namespace

extern "C" {

fm_status fm_buffer_new(fm_buffer *out_buffer, fm_device device, fm_dtype dtype, size_t count) {
    return guard(__func__, [&] {
        require_out(out_buffer, "out_buffer");
        auto owner = fm::lookup<Device>(device, "device");
        *out_buffer = fm::insert(std::make_shared<Buffer>(owner, dtype, count));
    });
}

fm_status fm_buffer_count(size_t *out_count, fm_buffer buffer) {
    return guard(__func__, [&] {
        require_out(out_count, "out_count");
        *out_count = fm::lookup<Buffer>(buffer, "buffer")->count();
    });
}

fm_status fm_buffer_dtype(fm_dtype *out_dtype, fm_buffer buffer) {
    return guard(__func__, [&] {
        require_out(out_dtype, "out_dtype");
        *out_dtype = fm::lookup<Buffer>(buffer, "buffer")->dtype();
    });
}

fm_status fm_buffer_nbytes(size_t *out_bytes, fm_buffer buffer) {
    return guard(__func__, [&] {
        require_out(out_bytes, "out_bytes");
        *out_bytes = fm::lookup<Buffer>(buffer, "buffer")->nbytes();
    });
}

fm_status fm_buffer_device(fm_device *out_device, fm_buffer buffer) {
    return guard(__func__, [&] {
        require_out(out_device, "out_device");
        *out_device = fm::insert(fm::lookup<Buffer>(buffer, "buffer")->device());
    });
}

fm_status fm_buffer_write(fm_buffer dst, size_t dst_offset, const void *src, size_t count,
                          fm_stream stream) {
    return guard(__func__, [&] {
        auto buffer = fm::lookup<Buffer>(dst, "dst");
        auto queue = resolve_stream(stream, *buffer->device());
        check_range(*buffer, dst_offset, count, "dst");
        if (count == 0) return;
        if (src == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'src' is NULL");
        size_t size = buffer->element_size();
        buffer->device()->iface().transfer.write(buffer->device()->ctx(), buffer->data(),
                                                 dst_offset * size, src, count * size,
                                                 stream_ctx(queue));
        buffer->used_on(queue);
    });
}

fm_status fm_staging_new(fm_staging *out_staging, fm_device device, size_t bytes) {
    return guard(__func__, [&] {
        require_out(out_staging, "out_staging");
        auto staging = std::make_shared<fm::Staging>(fm::lookup<Device>(device, "device"), bytes);
        *out_staging = fm::insert(staging);
    });
}

fm_status fm_staging_data(void **out_ptr, size_t *out_bytes, fm_staging staging) {
    return guard(__func__, [&] {
        require_out(out_ptr, "out_ptr");
        require_out(out_bytes, "out_bytes");
        auto s = fm::lookup<fm::Staging>(staging, "staging");
        *out_ptr = s->data();
        *out_bytes = s->nbytes();
    });
}

fm_status fm_buffer_write_staged(fm_buffer dst, size_t dst_offset, fm_staging src, size_t src_offset,
                                 size_t bytes, fm_stream stream) {
    return guard(__func__, [&] {
        auto buffer = fm::lookup<Buffer>(dst, "dst");
        auto staging = fm::lookup<fm::Staging>(src, "src");
        if (staging->device() != buffer->device()) {
            fail(FM_ERR_INVALID_ARGUMENT, "argument 'src': the staging buffer is for ", staging->device()->label(),
                 ", the buffer is on ", buffer->device()->label());
        }
        auto queue = resolve_stream(stream, *buffer->device());
        size_t size = buffer->element_size();
        if (bytes % size != 0) {
            fail(FM_ERR_INVALID_ARGUMENT, "argument 'bytes': ", bytes, " is not a whole number of ",
                 fm_dtype_str(buffer->dtype()), " elements");
        }
        check_range(*buffer, dst_offset, bytes / size, "dst");
        if (src_offset > staging->nbytes() || bytes > staging->nbytes() - src_offset) {
            fail(FM_ERR_OUT_OF_RANGE, "argument 'bytes': src offset ", src_offset, " + ", bytes,
                 " bytes exceeds the staging buffer of ", staging->nbytes(), " bytes");
        }
        if (bytes == 0) return;
        const auto &transfer = buffer->device()->iface().transfer;
        const auto *from = static_cast<const char *>(staging->data()) + src_offset;
        if (transfer.write_from_host) {
            transfer.write_from_host(buffer->device()->ctx(), buffer->data(), dst_offset * size, from, bytes,
                                     stream_ctx(queue));
        } else {
            transfer.write(buffer->device()->ctx(), buffer->data(), dst_offset * size, from, bytes, stream_ctx(queue));
        }
        buffer->used_on(queue);
    });
}

fm_status fm_buffer_read(fm_buffer src, size_t src_offset, void *dst, size_t count,
                         fm_stream stream) {
    return guard(__func__, [&] {
        auto buffer = fm::lookup<Buffer>(src, "src");
        auto queue = resolve_stream(stream, *buffer->device());
        check_range(*buffer, src_offset, count, "src");
        if (count == 0) return;
        if (dst == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'dst' is NULL");
        size_t size = buffer->element_size();
        buffer->device()->iface().transfer.read(buffer->device()->ctx(), buffer->data(),
                                                src_offset * size, dst, count * size,
                                                stream_ctx(queue));
        buffer->used_on(queue);
    });
}

fm_status fm_buffer_copy(fm_buffer dst, size_t dst_offset, fm_buffer src, size_t src_offset,
                         size_t count, fm_stream stream) {
    return guard(__func__, [&] {
        auto to = fm::lookup<Buffer>(dst, "dst");
        auto from = fm::lookup<Buffer>(src, "src");
        if (to->dtype() != from->dtype()) {
            fail(FM_ERR_DTYPE_MISMATCH, "argument 'src' is ", fm_dtype_str(from->dtype()),
                 ", 'dst' is ", fm_dtype_str(to->dtype()));
        }
        check_range(*to, dst_offset, count, "dst");
        check_range(*from, src_offset, count, "src");
        size_t size = to->element_size();
        if (to->device() == from->device()) {
            auto queue = resolve_stream(stream, *to->device());
            if (count == 0) return;
            to->device()->iface().transfer.copy(to->device()->ctx(), to->data(), dst_offset * size,
                                                from->data(), src_offset * size, count * size,
                                                stream_ctx(queue));
            to->used_on(queue);
            from->used_on(queue);
            return;
        }
        // Between devices: through host memory, complete before returning.
        std::shared_ptr<Stream> queue;
        if (stream != 0) {
            queue = fm::lookup<Stream>(stream, "stream");
            if (queue->device() != to->device() && queue->device() != from->device()) {
                fail(FM_ERR_INVALID_ARGUMENT, "argument 'stream' belongs to ",
                     queue->device()->label(), ", neither the source nor the destination device");
            }
            queue->synchronize();
        }
        if (count == 0) return;
        std::vector<unsigned char> host(count * size);
        from->device()->iface().transfer.read(from->device()->ctx(), from->data(),
                                              src_offset * size, host.data(), host.size(), nullptr);
        to->device()->iface().transfer.write(to->device()->ctx(), to->data(), dst_offset * size,
                                             host.data(), host.size(), nullptr);
    });
}

fm_status fm_buffer_fill(fm_buffer buffer, size_t offset, size_t count, double value,
                         fm_stream stream) {
    return guard(__func__, [&] {
        auto target = fm::lookup<Buffer>(buffer, "buffer");
        auto queue = resolve_stream(stream, *target->device());
        check_range(*target, offset, count, "buffer");
        unsigned char pattern[4];
        size_t pattern_bytes = fm::encode_scalar(target->dtype(), value, pattern);
        if (count == 0) return;
        target->device()->iface().transfer.fill(target->device()->ctx(), target->data(),
                                                offset * target->element_size(), count, pattern,
                                                pattern_bytes, stream_ctx(queue));
        target->used_on(queue);
    });
}

}  // extern "C"
