// One table for every handle the C ABI hands out. A handle packs
// (kind, generation, slot) into a uintptr_t, so a zero, forged, released or
// wrong-kind handle is detected and reported instead of dereferenced.
#pragma once

#include <cstdint>
#include <memory>

namespace fm {

enum class ObjectKind : uint8_t {
    Device = 1,
    Buffer = 2,
    Stream = 3,
    Tensor = 4,
    Graph = 5,
    Exec = 6,
    Trainer = 7,
    Inference = 8,
    Staging = 9,
};

const char *object_kind_name(ObjectKind kind);

// Base of everything a handle can point to. Subclasses declare
// `static constexpr ObjectKind kind`.
class Object {
public:
    virtual ~Object() = default;
};

// Registers `object` and returns a handle holding one reference to it.
uintptr_t handle_insert(std::shared_ptr<Object> object, ObjectKind kind);

// The object behind `handle`, kept alive by the returned pointer for as long
// as the caller holds it (even if another thread releases the handle).
// Throws FM_ERR_INVALID_HANDLE naming `argument` when the handle is not a
// live handle of `kind`.
std::shared_ptr<Object> handle_lookup(uintptr_t handle, ObjectKind kind, const char *argument);

// fm_retain / fm_release: any kind. Throw FM_ERR_INVALID_HANDLE.
void handle_retain(uintptr_t handle);
void handle_release(uintptr_t handle);

template <class T>
std::shared_ptr<T> lookup(uintptr_t handle, const char *argument) {
    return std::static_pointer_cast<T>(handle_lookup(handle, T::kind, argument));
}

template <class T>
uintptr_t insert(std::shared_ptr<T> object) {
    return handle_insert(std::move(object), T::kind);
}

}  // namespace fm
