// A strict JSON reader for the headers of safetensors files, and the
// quoting their writer needs. Made for input from untrusted files: nesting
// is bounded, duplicate keys and trailing bytes are errors, and integers
// are read exactly (data offsets go up to 2^64).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fm::json {

// Thrown for text that is not JSON, naming where and why.
class SyntaxError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct Value {
    enum class Kind { Null, Bool, Number, String, Array, Object };
    Kind kind = Kind::Null;
    bool boolean = false;
    std::string text;  // a string's contents, or a number's literal
    std::vector<Value> items;
    std::vector<std::pair<std::string, Value>> members;  // in file order

    // The member called `key`, or nullptr (objects only).
    const Value *find(const std::string &key) const;
    // A number that is a non-negative integer below 2^64, or false.
    bool as_uint64(uint64_t *out) const;
};

// The one JSON value in `size` bytes at `data` (whitespace around it).
Value parse(const char *data, size_t size);

// `text` as a JSON string literal, quotes included.
std::string quote(const std::string &text);

}  // namespace fm::json
