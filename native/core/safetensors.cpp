#include "safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "error.h"
#include "json.h"

namespace fm {

namespace {

struct FileCloser {
    void operator()(std::FILE *f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

File open_for_reading(const std::string &path) {
    File file(std::fopen(path.c_str(), "rb"));
    if (!file) fail(FM_ERR_IO, "cannot open ", path, ": ", std::strerror(errno));
    return file;
}

uint64_t file_size(std::FILE *file, const std::string &path) {
    if (std::fseek(file, 0, SEEK_END) != 0) fail(FM_ERR_IO, "cannot seek in ", path, ": ", std::strerror(errno));
    long size = std::ftell(file);
    if (size < 0) fail(FM_ERR_IO, "cannot tell the size of ", path, ": ", std::strerror(errno));
    return uint64_t(size);
}

void read_exactly(std::FILE *file, uint64_t offset, void *out, uint64_t bytes, const std::string &path) {
    if (std::fseek(file, long(offset), SEEK_SET) != 0 || std::fread(out, 1, bytes, file) != bytes) {
        fail(FM_ERR_IO, "cannot read ", bytes, " bytes at offset ", offset, " of ", path,
             " (it changed while being read?)");
    }
}

size_t element_bytes(const std::string &dtype) {
    static const std::pair<const char *, size_t> kSizes[] = {
        {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
        {"I8", 1},  {"U64", 8}, {"U32", 4}, {"U16", 2},  {"U8", 1},   {"BOOL", 1},
    };
    for (const auto &entry : kSizes) {
        if (dtype == entry.first) return entry.second;
    }
    return 0;
}

class HeaderCheck {
public:
    explicit HeaderCheck(const std::string &path) : path_(path) {}

    [[noreturn]] void corrupt(const std::string &why) const {
        fail(FM_ERR_IO, path_, " is not a valid safetensors file: ", why);
    }

    SafetensorsEntry entry(const std::string &name, const json::Value &v) const {
        using Kind = json::Value::Kind;
        if (v.kind != Kind::Object) corrupt("tensor '" + name + "' is not an object");
        SafetensorsEntry e;
        e.name = name;
        const json::Value *dtype = v.find("dtype"), *shape = v.find("shape"), *offsets = v.find("data_offsets");
        if (!dtype || dtype->kind != Kind::String) corrupt("tensor '" + name + "' has no dtype string");
        if (!shape || shape->kind != Kind::Array) corrupt("tensor '" + name + "' has no shape array");
        if (!offsets || offsets->kind != Kind::Array || offsets->items.size() != 2) {
            corrupt("tensor '" + name + "' has no data_offsets pair");
        }
        if (v.members.size() != 3) corrupt("tensor '" + name + "' has fields besides dtype, shape and data_offsets");
        e.dtype = dtype->text;
        size_t size = element_bytes(e.dtype);
        if (size == 0) corrupt("tensor '" + name + "' has unknown dtype '" + e.dtype + "'");
        if (shape->items.size() > FM_MAX_RANK) corrupt("tensor '" + name + "' has rank above FM_MAX_RANK");
        uint64_t bytes = size;
        for (const json::Value &dim : shape->items) {
            uint64_t d = 0;
            if (!dim.as_uint64(&d) || d > uint64_t(INT64_MAX)) corrupt("tensor '" + name + "' has a bad dim");
            if (__builtin_mul_overflow(bytes, d, &bytes)) corrupt("tensor '" + name + "' is too large");
            e.shape.push_back(int64_t(d));
        }
        if (!offsets->items[0].as_uint64(&e.begin) || !offsets->items[1].as_uint64(&e.end) || e.begin > e.end) {
            corrupt("tensor '" + name + "' has bad data_offsets");
        }
        if (e.end - e.begin != bytes) {
            corrupt("tensor '" + name + "' spans " + std::to_string(e.end - e.begin) + " bytes, its shape " +
                    to_string(e.shape) + " of " + e.dtype + " needs " + std::to_string(bytes));
        }
        return e;
    }

private:
    const std::string &path_;
};

}  // namespace

const SafetensorsEntry *SafetensorsHeader::find(const std::string &name) const {
    for (const SafetensorsEntry &e : tensors) {
        if (e.name == name) return &e;
    }
    return nullptr;
}

const std::string *SafetensorsHeader::metadata_value(const std::string &key) const {
    for (const auto &entry : metadata) {
        if (entry.first == key) return &entry.second;
    }
    return nullptr;
}

SafetensorsHeader read_safetensors_header(const std::string &path) {
    File file = open_for_reading(path);
    const uint64_t size = file_size(file.get(), path);
    HeaderCheck check(path);
    if (size < 8) check.corrupt(std::to_string(size) + " bytes, shorter than the 8-byte header length");
    unsigned char prefix[8];
    read_exactly(file.get(), 0, prefix, 8, path);
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; --i) header_bytes = header_bytes << 8 | prefix[i];
    if (header_bytes > kMaxSafetensorsHeader || header_bytes > size - 8) {
        check.corrupt("the header claims " + std::to_string(header_bytes) + " bytes but the file has " +
                      std::to_string(size));
    }
    std::string text(size_t(header_bytes), '\0');
    read_exactly(file.get(), 8, text.data(), header_bytes, path);
    json::Value root;
    try {
        root = json::parse(text.data(), text.size());
    } catch (const json::SyntaxError &e) {
        check.corrupt(std::string("the header is not JSON (") + e.what() + ")");
    }
    if (root.kind != json::Value::Kind::Object) check.corrupt("the header is not a JSON object");
    SafetensorsHeader header;
    header.header_bytes = header_bytes;
    header.data_bytes = size - 8 - header_bytes;
    for (const auto &member : root.members) {
        if (member.first == "__metadata__") {
            if (member.second.kind != json::Value::Kind::Object) check.corrupt("__metadata__ is not an object");
            for (const auto &m : member.second.members) {
                if (m.second.kind != json::Value::Kind::String) check.corrupt("metadata '" + m.first + "' is not a string");
                header.metadata.emplace_back(m.first, m.second.text);
            }
            continue;
        }
        header.tensors.push_back(check.entry(member.first, member.second));
    }
    std::sort(header.tensors.begin(), header.tensors.end(),
              [](const SafetensorsEntry &a, const SafetensorsEntry &b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
    uint64_t at = 0;
    for (const SafetensorsEntry &e : header.tensors) {
        if (e.begin != at) {
            check.corrupt("tensor '" + e.name + "' starts at " + std::to_string(e.begin) + ", not at " +
                          std::to_string(at) + (e.begin < at ? " (tensors overlap)" : " (a gap)"));
        }
        at = e.end;
    }
    if (at != header.data_bytes) {
        check.corrupt("the tensors hold " + std::to_string(at) + " bytes but the data has " +
                      std::to_string(header.data_bytes) + (at < header.data_bytes ? " (trailing bytes)" : " (truncated)"));
    }
    return header;
}

std::vector<unsigned char> read_safetensors_data(const std::string &path, const SafetensorsHeader &header) {
    File file = open_for_reading(path);
    if (file_size(file.get(), path) != header.data_offset() + header.data_bytes) {
        fail(FM_ERR_IO, path, " changed size while being read");
    }
    std::vector<unsigned char> data(size_t(header.data_bytes));
    read_exactly(file.get(), header.data_offset(), data.data(), header.data_bytes, path);
    return data;
}

std::vector<unsigned char> encode_safetensors(const std::vector<SafetensorsTensor> &tensors,
                                              const std::vector<std::pair<std::string, std::string>> &metadata) {
    std::string header = "{\"__metadata__\":{";
    for (size_t i = 0; i < metadata.size(); ++i) {
        header += (i ? "," : "") + json::quote(metadata[i].first) + ":" + json::quote(metadata[i].second);
    }
    header += "}";
    uint64_t offset = 0;
    for (const SafetensorsTensor &t : tensors) {
        uint64_t end = offset + uint64_t(element_count(t.shape)) * 4;
        header += "," + json::quote(t.name) + ":{\"dtype\":\"F32\",\"shape\":[";
        for (size_t d = 0; d < t.shape.size(); ++d) header += (d ? "," : "") + std::to_string(t.shape[d]);
        header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(end) + "]}";
        offset = end;
    }
    header += "}";
    while (header.size() % 8 != 0) header.push_back(' ');
    std::vector<unsigned char> bytes(8 + header.size() + size_t(offset));
    uint64_t length = header.size();
    for (int i = 0; i < 8; ++i) bytes[size_t(i)] = static_cast<unsigned char>(length >> (8 * i));
    std::memcpy(bytes.data() + 8, header.data(), header.size());
    unsigned char *out = bytes.data() + 8 + header.size();
    for (const SafetensorsTensor &t : tensors) {
        size_t n = size_t(element_count(t.shape)) * 4;
        // Little-endian f32, as the format says: the bytes of the host's
        // floats on every platform ferrometal supports.
        if (n) std::memcpy(out, t.data, n);
        out += n;
    }
    return bytes;
}

uint32_t crc32c(const void *data, size_t size, uint32_t crc) {
    static const auto table = [] {
        std::vector<uint32_t> t(256);
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    const auto *p = static_cast<const unsigned char *>(data);
    crc = ~crc;
    for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

}  // namespace fm
