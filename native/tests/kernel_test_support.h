// Shared by the CPU kernel tests: failure counting, a checksum of every
// output (compared across thread counts), a portable random generator, and
// outputs with guard zones that catch out-of-bounds and unwritten elements.
#pragma once

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace kernel_test {

using Shape = std::vector<int64_t>;

// ---- Reporting --------------------------------------------------------------

inline int g_checks = 0;
inline int g_failures = 0;
inline std::string g_case;  // the case being run, printed with each failure

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        ++kernel_test::g_checks;                                                                       \
        if (!(cond)) {                                                                    \
            if (++kernel_test::g_failures <= 40) {                                                     \
                std::fprintf(stderr, "%s:%d: CHECK(%s) failed in %s\n", __FILE__, __LINE__, \
                             #cond, kernel_test::g_case.c_str());                                      \
            }                                                                             \
        }                                                                                 \
    } while (0)

inline std::string shape_str(const Shape &shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
    return s + "]";
}

// ---- Checksum of every output (FNV-1a, 64 bit) -----------------------------

inline uint64_t g_checksum = 14695981039346656037ull;

inline void hash_bytes(const void *data, size_t bytes) {
    const auto *p = static_cast<const unsigned char *>(data);
    for (size_t i = 0; i < bytes; ++i) {
        g_checksum ^= p[i];
        g_checksum *= 1099511628211ull;
    }
}

// ---- Random numbers (splitmix64: the same sequence on every platform) ------

struct Rng {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    int64_t range(int64_t lo, int64_t hi) { return lo + int64_t(next() % uint64_t(hi - lo + 1)); }
    float uniform(float lo, float hi) { return lo + (hi - lo) * float(next() >> 40) / float(1 << 24); }
    bool chance(int percent) { return range(0, 99) < percent; }
    Shape shape(int rank, int64_t lo, int64_t hi) {
        Shape s(static_cast<size_t>(rank));
        for (auto &d : s) d = chance(15) ? 1 : range(lo, hi);
        return s;
    }
    std::vector<float> floats(size_t n, float lo = -2.0f, float hi = 2.0f) {
        std::vector<float> v(n);
        for (auto &x : v) x = uniform(lo, hi);
        return v;
    }
};

// ---- Output buffers with guard zones -----------------------------------------

// An output with kGuard elements of a byte pattern on each side, so a write
// out of bounds is seen; the inside starts as a value no kernel produces,
// so an element left unwritten is seen too.
constexpr size_t kGuard = 16;
constexpr unsigned char kGuardByte = 0xA5;
constexpr float kUnwritten = -7.77e7f;

template <class T>
class Output {
public:
    explicit Output(size_t n, T inside = T(kUnwritten)) : n_(n), storage_(n + 2 * kGuard) {
        std::memset(storage_.data(), kGuardByte, kGuard * sizeof(T));
        std::memset(storage_.data() + kGuard + n, kGuardByte, kGuard * sizeof(T));
        for (size_t i = 0; i < n; ++i) storage_[kGuard + i] = inside;
    }
    T *data() { return storage_.data() + kGuard; }
    const T *data() const { return storage_.data() + kGuard; }
    T operator[](size_t i) const { return storage_[kGuard + i]; }
    size_t size() const { return n_; }

    // Checks the guards and adds the contents to the checksum.
    void finish() {
        bool intact = true;
        const auto *bytes = reinterpret_cast<const unsigned char *>(storage_.data());
        const size_t guard_bytes = kGuard * sizeof(T), tail = (kGuard + n_) * sizeof(T);
        for (size_t i = 0; i < guard_bytes; ++i) {
            intact = intact && bytes[i] == kGuardByte && bytes[tail + i] == kGuardByte;
        }
        CHECK(intact);
        hash_bytes(data(), n_ * sizeof(T));
    }

private:
    size_t n_;
    std::vector<T> storage_;
};

}  // namespace kernel_test
