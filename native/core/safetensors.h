// The safetensors file format (8-byte little-endian header length, a JSON
// header, the tensors' bytes), read with exact validation: every byte of
// the file is accounted for by the header, or the file is refused before
// anything is allocated for its tensors.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "shape.h"

namespace fm {

struct SafetensorsEntry {
    std::string name;
    std::string dtype;  // "F32", "I64", ...
    Shape shape;
    uint64_t begin = 0, end = 0;  // offsets into the data
};

struct SafetensorsHeader {
    std::vector<SafetensorsEntry> tensors;  // in data order
    std::vector<std::pair<std::string, std::string>> metadata;
    uint64_t header_bytes = 0;  // the JSON, padding included
    uint64_t data_bytes = 0;

    const SafetensorsEntry *find(const std::string &name) const;
    const std::string *metadata_value(const std::string &key) const;
    uint64_t data_offset() const { return 8 + header_bytes; }
};

// The largest header read: far above any real one, and bounded so that a
// hostile length cannot make a reader allocate gigabytes.
constexpr uint64_t kMaxSafetensorsHeader = 64ull << 20;

// Reads and validates the header of the safetensors file `path` (the
// header length, the JSON, each tensor's dtype, shape and offsets: in
// range, contiguous from 0, covering the data exactly, no trailing bytes).
// Throws FM_ERR_IO naming `path` and what is wrong.
SafetensorsHeader read_safetensors_header(const std::string &path);

// Reads the data of a file whose header was validated: data_bytes bytes,
// checked against the file's size again (it may have changed since).
std::vector<unsigned char> read_safetensors_data(const std::string &path, const SafetensorsHeader &header);

struct SafetensorsTensor {
    std::string name;
    Shape shape;
    const float *data;  // element_count(shape) f32 values
};

// A whole F32 safetensors file: header (metadata first, tensors in the
// order given, padded to 8 bytes) and data.
std::vector<unsigned char> encode_safetensors(const std::vector<SafetensorsTensor> &tensors,
                                              const std::vector<std::pair<std::string, std::string>> &metadata);

// CRC-32C (Castagnoli) of `size` bytes, continuing from `crc`.
uint32_t crc32c(const void *data, size_t size, uint32_t crc = 0);

}  // namespace fm
