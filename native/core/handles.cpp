#include "handles.h"

#include <deque>
#include <mutex>
#include <vector>

#include "error.h"

static_assert(sizeof(uintptr_t) == 8, "ferrometal handles need a 64-bit platform");

namespace fm {
namespace {

// Layout of a handle: bits 0-31 slot index + 1 (so 0 is never valid),
// bits 32-55 generation, bits 56-63 kind.
constexpr uint64_t kSlotMask = 0xffffffffull;
constexpr uint64_t kGenerationMask = 0xffffffull;

struct Slot {
    std::shared_ptr<Object> object;
    uint64_t references = 0;
    uint32_t generation = 1;
    ObjectKind kind = ObjectKind::Device;
};

struct Decoded {
    uint64_t slot;
    uint32_t generation;
    ObjectKind kind;
};

Decoded decode(uintptr_t handle) {
    return Decoded{(handle & kSlotMask) - 1,
                   static_cast<uint32_t>((handle >> 32) & kGenerationMask),
                   static_cast<ObjectKind>(handle >> 56)};
}

uintptr_t encode(uint64_t slot, uint32_t generation, ObjectKind kind) {
    return static_cast<uintptr_t>((slot + 1) | (uint64_t(generation) << 32) |
                                  (uint64_t(kind) << 56));
}

class HandleTable {
public:
    uintptr_t insert(std::shared_ptr<Object> object, ObjectKind kind) {
        std::lock_guard<std::mutex> lock(mutex_);
        uint64_t index;
        if (free_.empty()) {
            if (slots_.size() >= kSlotMask - 1) fail(FM_ERR_OUT_OF_MEMORY, "handle table is full");
            index = slots_.size();
            slots_.emplace_back();
        } else {
            // FIFO reuse keeps a just-released slot idle as long as possible,
            // which makes a stale handle meet a bumped generation.
            index = free_.front();
            free_.pop_front();
        }
        Slot &slot = slots_[index];
        slot.object = std::move(object);
        slot.references = 1;
        slot.kind = kind;
        return encode(index, slot.generation, kind);
    }

    std::shared_ptr<Object> lookup(uintptr_t handle, ObjectKind kind, const char *argument) {
        std::lock_guard<std::mutex> lock(mutex_);
        Slot &slot = checked(handle, argument);
        if (slot.kind != kind) {
            fail(FM_ERR_INVALID_HANDLE, "argument '", argument, "' is a ",
                 object_kind_name(slot.kind), " handle, expected a ", object_kind_name(kind),
                 " handle");
        }
        return slot.object;
    }

    void retain(uintptr_t handle) {
        std::lock_guard<std::mutex> lock(mutex_);
        checked(handle, "handle").references++;
    }

    void release(uintptr_t handle) {
        std::shared_ptr<Object> last;  // destroyed after the lock is dropped
        {
            std::lock_guard<std::mutex> lock(mutex_);
            Slot &slot = checked(handle, "handle");
            if (--slot.references > 0) return;
            last = std::move(slot.object);
            // A slot whose generations are used up is retired, never reused:
            // wrapping would make its oldest released handles live again.
            if (slot.generation < kGenerationMask) {
                slot.generation++;
                free_.push_back(decode(handle).slot);
            }
        }
    }

private:
    Slot &checked(uintptr_t handle, const char *argument) {
        if (handle == 0) fail(FM_ERR_INVALID_HANDLE, "argument '", argument, "' is a zero handle");
        Decoded d = decode(handle);
        if (d.slot >= slots_.size() || slots_[d.slot].object == nullptr ||
            slots_[d.slot].generation != d.generation || slots_[d.slot].kind != d.kind) {
            fail(FM_ERR_INVALID_HANDLE, "argument '", argument, "' (0x", std::hex, handle,
                 ") is not a live handle: it was released, or never issued");
        }
        return slots_[d.slot];
    }

    std::mutex mutex_;
    std::vector<Slot> slots_;
    std::deque<uint64_t> free_;
};

// Never destroyed: objects leaked by the host must not be torn down during
// static destruction, after the GPU driver may already have unloaded.
HandleTable &table() {
    static HandleTable *instance = new HandleTable();
    return *instance;
}

}  // namespace

const char *object_kind_name(ObjectKind kind) {
    switch (kind) {
        case ObjectKind::Device: return "device";
        case ObjectKind::Buffer: return "buffer";
        case ObjectKind::Stream: return "stream";
        case ObjectKind::Tensor: return "tensor";
        case ObjectKind::Graph: return "graph";
        case ObjectKind::Exec: return "exec";
        case ObjectKind::Trainer: return "trainer";
        case ObjectKind::Inference: return "inference";
        case ObjectKind::Staging: return "staging";
    }
    return "unknown";
}

uintptr_t handle_insert(std::shared_ptr<Object> object, ObjectKind kind) {
    return table().insert(std::move(object), kind);
}

std::shared_ptr<Object> handle_lookup(uintptr_t handle, ObjectKind kind, const char *argument) {
    return table().lookup(handle, kind, argument);
}

void handle_retain(uintptr_t handle) { table().retain(handle); }

void handle_release(uintptr_t handle) { table().release(handle); }

}  // namespace fm
