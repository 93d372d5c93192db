#include "json.h"

#include <cstdio>

namespace fm::json {

namespace {

// Deep enough for any header; shallow enough that hostile nesting cannot
// exhaust the stack.
constexpr int kMaxDepth = 32;

class Reader {
public:
    Reader(const char *data, size_t size) : p_(data), begin_(data), end_(data + size) {}

    Value document() {
        Value v = value(0);
        skip_space();
        if (p_ != end_) error("bytes after the end of the value");
        return v;
    }

private:
    [[noreturn]] void error(const char *what) const {
        throw SyntaxError(std::string(what) + " at byte " + std::to_string(p_ - begin_));
    }

    void skip_space() {
        while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
    }

    bool take(char c) {
        skip_space();
        if (p_ != end_ && *p_ == c) {
            ++p_;
            return true;
        }
        return false;
    }

    void expect(char c) {
        if (!take(c)) error((std::string("expected '") + c + "'").c_str());
    }

    bool literal(const char *word) {
        size_t n = std::char_traits<char>::length(word);
        if (size_t(end_ - p_) < n || std::char_traits<char>::compare(p_, word, n) != 0) return false;
        p_ += n;
        return true;
    }

    Value value(int depth) {
        if (depth > kMaxDepth) error("nesting deeper than 32 levels");
        skip_space();
        if (p_ == end_) error("unexpected end");
        Value v;
        switch (*p_) {
            case '{': object(&v, depth); break;
            case '[': array(&v, depth); break;
            case '"':
                v.kind = Value::Kind::String;
                v.text = string();
                break;
            case 't':
            case 'f':
                v.kind = Value::Kind::Bool;
                v.boolean = *p_ == 't';
                if (!literal(v.boolean ? "true" : "false")) error("unknown literal");
                break;
            case 'n':
                if (!literal("null")) error("unknown literal");
                break;
            default:
                v.kind = Value::Kind::Number;
                v.text = number();
        }
        return v;
    }

    void object(Value *v, int depth) {
        v->kind = Value::Kind::Object;
        ++p_;
        if (take('}')) return;
        do {
            skip_space();
            if (p_ == end_ || *p_ != '"') error("expected a key");
            std::string key = string();
            if (v->find(key)) error(("duplicate key \"" + key + "\"").c_str());
            expect(':');
            v->members.emplace_back(std::move(key), value(depth + 1));
        } while (take(','));
        expect('}');
    }

    void array(Value *v, int depth) {
        v->kind = Value::Kind::Array;
        ++p_;
        if (take(']')) return;
        do v->items.push_back(value(depth + 1));
        while (take(','));
        expect(']');
    }

    unsigned hex4() {
        if (end_ - p_ < 4) error("short \\u escape");
        unsigned code = 0;
        for (int i = 0; i < 4; ++i) {
            char c = *p_++;
            code <<= 4;
            if (c >= '0' && c <= '9') code |= unsigned(c - '0');
            else if (c >= 'a' && c <= 'f') code |= unsigned(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') code |= unsigned(c - 'A' + 10);
            else error("bad \\u escape");
        }
        return code;
    }

    static void append_utf8(std::string *out, unsigned code) {
        if (code < 0x80) {
            out->push_back(char(code));
        } else if (code < 0x800) {
            out->push_back(char(0xc0 | (code >> 6)));
            out->push_back(char(0x80 | (code & 0x3f)));
        } else if (code < 0x10000) {
            out->push_back(char(0xe0 | (code >> 12)));
            out->push_back(char(0x80 | ((code >> 6) & 0x3f)));
            out->push_back(char(0x80 | (code & 0x3f)));
        } else {
            out->push_back(char(0xf0 | (code >> 18)));
            out->push_back(char(0x80 | ((code >> 12) & 0x3f)));
            out->push_back(char(0x80 | ((code >> 6) & 0x3f)));
            out->push_back(char(0x80 | (code & 0x3f)));
        }
    }

    std::string string() {
        ++p_;  // the opening quote
        std::string out;
        while (true) {
            if (p_ == end_) error("unterminated string");
            unsigned char c = static_cast<unsigned char>(*p_++);
            if (c == '"') return out;
            if (c < 0x20) error("control character in a string");
            if (c != '\\') {
                out.push_back(char(c));
                continue;
            }
            if (p_ == end_) error("unterminated escape");
            char e = *p_++;
            switch (e) {
                case '"': out.push_back('"'); break;
                case '\\': out.push_back('\\'); break;
                case '/': out.push_back('/'); break;
                case 'b': out.push_back('\b'); break;
                case 'f': out.push_back('\f'); break;
                case 'n': out.push_back('\n'); break;
                case 'r': out.push_back('\r'); break;
                case 't': out.push_back('\t'); break;
                case 'u': {
                    unsigned code = hex4();
                    if (code >= 0xd800 && code < 0xdc00) {
                        if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') error("lone surrogate");
                        p_ += 2;
                        unsigned low = hex4();
                        if (low < 0xdc00 || low >= 0xe000) error("bad surrogate pair");
                        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                    } else if (code >= 0xdc00 && code < 0xe000) {
                        error("lone surrogate");
                    }
                    append_utf8(&out, code);
                    break;
                }
                default: error("unknown escape");
            }
        }
    }

    std::string number() {
        const char *start = p_;
        auto digits = [&] {
            const char *from = p_;
            while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
            return p_ - from;
        };
        if (p_ != end_ && *p_ == '-') ++p_;
        if (p_ != end_ && *p_ == '0') {
            ++p_;
        } else if (digits() == 0) {
            error("expected a value");
        }
        if (p_ != end_ && *p_ == '.') {
            ++p_;
            if (digits() == 0) error("expected digits after '.'");
        }
        if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
            ++p_;
            if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            if (digits() == 0) error("expected an exponent");
        }
        return std::string(start, p_);
    }

    const char *p_;
    const char *begin_;
    const char *end_;
};

}  // namespace

const Value *Value::find(const std::string &key) const {
    for (const auto &member : members) {
        if (member.first == key) return &member.second;
    }
    return nullptr;
}

bool Value::as_uint64(uint64_t *out) const {
    if (kind != Kind::Number || text.empty()) return false;
    uint64_t n = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return false;  // sign, fraction or exponent
        if (__builtin_mul_overflow(n, 10u, &n) || __builtin_add_overflow(n, uint64_t(c - '0'), &n)) return false;
    }
    *out = n;
    return true;
}

Value parse(const char *data, size_t size) { return Reader(data, size).document(); }

std::string quote(const std::string &text) {
    std::string out = "\"";
    for (char ch : text) {
        unsigned char c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char escape[8];
                    std::snprintf(escape, sizeof escape, "\\u%04x", c);
                    out += escape;
                } else {
                    out.push_back(ch);
                }
        }
    }
    return out + "\"";
}

}  // namespace fm::json
