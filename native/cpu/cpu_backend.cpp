// The CPU backend, level 1: 64-byte aligned host memory (pooled by the
// core), memcpy transfers, and streams that complete work at submission.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "backend.h"
#include "cpu_exec.h"

namespace fm {

namespace {

constexpr size_t kAlignment = 64;  // a cache line, and the widest SIMD register

// The CPU has no device context of its own; a static marker stands in so
// that contexts are never null.
int cpu_context_marker;

std::string cpu_model_name() {
    std::string model;
    if (FILE *cpuinfo = std::fopen("/proc/cpuinfo", "r")) {
        char line[512];
        while (std::fgets(line, sizeof line, cpuinfo)) {
            if (std::strncmp(line, "model name", 10) == 0) {
                const char *colon = std::strchr(line, ':');
                if (colon) model = colon + 2;
                break;
            }
        }
        std::fclose(cpuinfo);
    }
    while (!model.empty() && (model.back() == '\n' || model.back() == ' ')) model.pop_back();
    return model.empty() ? std::string("cpu") : model;
}

uint64_t available_memory_bytes() {
    // MemAvailable counts reclaimable page cache, unlike _SC_AVPHYS_PAGES.
    if (FILE *meminfo = std::fopen("/proc/meminfo", "r")) {
        char line[256];
        unsigned long long kib = 0;
        while (std::fgets(line, sizeof line, meminfo)) {
            if (std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
        }
        std::fclose(meminfo);
        if (kib > 0) return kib * 1024;
    }
#ifdef _SC_AVPHYS_PAGES
    return uint64_t(sysconf(_SC_AVPHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
#else
    return 0;
#endif
}

void cpu_get_info(void *, fm_device_info *out) {
    std::string name = cpu_model_name() + " (" +
                       std::to_string(std::thread::hardware_concurrency()) + " threads)";
    std::snprintf(out->name, sizeof out->name, "%s", name.c_str());
    out->total_memory = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
    out->free_memory = available_memory_bytes();
}

void *cpu_raw_alloc(void *, size_t bytes) {
    // aligned_alloc needs a multiple of the alignment; pool classes are.
    size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    if (rounded < bytes) return nullptr;
    return std::aligned_alloc(kAlignment, rounded);
}

void cpu_raw_free(void *, void *ptr, size_t) { std::free(ptr); }

// Zero-byte transfers return before memcpy: a zero-size buffer's address
// or the caller's pointer may be NULL, which memcpy may not be given.
void cpu_write(void *, void *dst, size_t dst_offset, const void *src, size_t bytes, void *) {
    if (bytes == 0) return;
    std::memcpy(static_cast<char *>(dst) + dst_offset, src, bytes);
}

void cpu_read(void *, const void *src, size_t src_offset, void *dst, size_t bytes, void *) {
    if (bytes == 0) return;
    std::memcpy(dst, static_cast<const char *>(src) + src_offset, bytes);
}

void cpu_copy(void *, void *dst, size_t dst_offset, const void *src, size_t src_offset,
              size_t bytes, void *) {
    if (bytes == 0) return;
    std::memmove(static_cast<char *>(dst) + dst_offset,
                 static_cast<const char *>(src) + src_offset, bytes);
}

void cpu_fill(void *, void *dst, size_t dst_offset, size_t count, const void *pattern,
              size_t pattern_bytes, void *) {
    if (count == 0) return;
    char *out = static_cast<char *>(dst) + dst_offset;
    if (pattern_bytes == 1) {
        std::memset(out, *static_cast<const unsigned char *>(pattern), count);
        return;
    }
    for (size_t i = 0; i < count; ++i) std::memcpy(out + i * pattern_bytes, pattern, pattern_bytes);
}

size_t cpu_device_count() { return 1; }

void *cpu_device_open(size_t) { return &cpu_context_marker; }

void cpu_device_close(void *) {}

BackendReg make_cpu_reg() {
    BackendReg reg;
    reg.backend = FM_BACKEND_CPU;
    reg.device_count = cpu_device_count;
    reg.device_open = cpu_device_open;
    reg.device_close = cpu_device_close;
    reg.iface.get_info = cpu_get_info;
    reg.iface.memory.raw_alloc = cpu_raw_alloc;
    reg.iface.memory.raw_free = cpu_raw_free;
    reg.iface.transfer.write = cpu_write;
    reg.iface.transfer.read = cpu_read;
    reg.iface.transfer.copy = cpu_copy;
    reg.iface.transfer.fill = cpu_fill;
    reg.iface.exec.compile = cpu::compile_plan;
    reg.iface.exec.run = cpu::run_plan;
    reg.iface.exec.release = cpu::release_plan;
    return reg;
}

}  // namespace

const BackendReg *cpu_backend_reg() {
    static const BackendReg reg = make_cpu_reg();
    return &reg;
}

}  // namespace fm
