// A Builder (lowering.h) that records every call as one line of text and
// keeps the calls themselves, so tests on any platform can check what the
// Metal backend would be asked to build. Header-only: it is test support,
// not part of the library.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "lowering.h"

namespace fm::metal {

class RecordingBuilder : public Builder {
public:
    struct Entry {
        enum Kind { Segment, Input, Op, Output, EndSegment, Matmul, Conv, Blit } kind;
        explicit Entry(Kind k) : kind(k) {}
        size_t segment = 0;
        Call call;          // Op
        Location location;  // Input, Output, Blit (to)
        Shape shape;        // Input
        DType dtype = DType::F32;
        MatmulKernel matmul;
        ConvKernel conv;
    };

    std::vector<std::string> lines;
    std::vector<Entry> entries;

    void begin_segment(size_t index) override {
        segment_ = index;
        lines.push_back("segment " + std::to_string(index));
        Entry e(Entry::Segment);
        e.segment = index;
        entries.push_back(e);
    }

    Tensor input(const Location &from, const Shape &shape, DType dtype) override {
        Tensor t = next_++;
        lines.push_back("  %" + std::to_string(t) + " = input " + where(from) + " " + dims(shape) + " " +
                        dtype_name(dtype));
        Entry e(Entry::Input);
        e.segment = segment_, e.location = from, e.shape = shape, e.dtype = dtype;
        entries.push_back(e);
        return t;
    }

    Tensor op(const Call &c) override {
        Tensor t = next_++;
        std::ostringstream line;
        line << "  %" << t << " = " << op_name(c.op) << "(";
        for (size_t i = 0; i < c.inputs.size(); ++i) line << (i ? ", %" : "%") << c.inputs[i];
        line << ") " << dims(c.shape) << " " << dtype_name(c.dtype) << attributes(c);
        lines.push_back(line.str());
        Entry e(Entry::Op);
        e.segment = segment_, e.call = c;
        entries.push_back(e);
        return t;
    }

    void output(Tensor tensor, const Location &to) override {
        lines.push_back("  output %" + std::to_string(tensor) + " -> " + where(to));
        Entry e(Entry::Output);
        e.segment = segment_, e.location = to;
        entries.push_back(e);
    }

    void end_segment() override {
        lines.push_back("end");
        entries.push_back(Entry(Entry::EndSegment));
    }

    void matmul_kernel(const MatmulKernel &k) override {
        std::ostringstream line;
        line << "kernel mps_matrix_multiplication " << where(k.a) << (k.transpose_a ? "^T" : "") << " x "
             << where(k.b) << (k.transpose_b ? "^T" : "") << " -> " << where(k.c) << " batch=" << k.batch
             << " m=" << k.m << " n=" << k.n << " k=" << k.k;
        lines.push_back(line.str());
        Entry e(Entry::Matmul);
        e.matmul = k;
        entries.push_back(e);
    }

    void conv_kernel(const ConvKernel &k) override {
        static const char *const kinds[] = {"mpscnn_convolution", "mpscnn_convolution_gradient(data)",
                                            "mpscnn_convolution_gradient(weights)"};
        std::ostringstream line;
        line << "kernel " << kinds[k.kind] << " source=" << where(k.source);
        if (k.kind == ConvKernel::WeightsGradient) line << " gradient=" << where(k.gradient);
        if (k.kind != ConvKernel::WeightsGradient) line << " weights(OHWI)=" << where(k.weights);
        line << " -> " << where(k.result) << " n=" << k.n << " c_in=" << k.c_in << " " << k.h << "x" << k.w
             << " c_out=" << k.c_out << " " << k.out_h << "x" << k.out_w << " slices=" << k.in_slices << "x"
             << k.in_pixel << "/" << k.out_slices << "x" << k.out_pixel << " offset=" << k.offset_x << ","
             << k.offset_y << window(k.window);
        lines.push_back(line.str());
        Entry e(Entry::Conv);
        e.conv = k;
        entries.push_back(e);
    }

    void blit(const Location &from, const Location &to) override {
        lines.push_back("blit " + where(from) + " -> " + where(to));
        Entry e(Entry::Blit);
        e.location = to;
        entries.push_back(e);
    }

    void step(size_t index, const Step &step) override {
        std::string what = step.kind == StepKind::Copy    ? "copy"
                           : step.kind == StepKind::Fused ? "fused " + std::to_string(step.fused->code.size())
                                                          : prim_name(step.prim);
        lines.push_back("# step " + std::to_string(index) + " (" + step.origin + "): " + what);
    }

    std::string text() const {
        std::string all;
        for (const std::string &line : lines) all += line + "\n";
        return all;
    }

    static std::string dims(const Shape &shape) {
        std::string s = "[";
        for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
        return s + "]";
    }

    static std::string where(const Location &loc) {
        std::string s = space_name(loc.space);
        if (loc.space != Space::Arena && loc.space != Space::Scratch && loc.space != Space::RunIndex) {
            s += "#" + std::to_string(loc.index);
        }
        if (loc.offset) s += "+" + std::to_string(loc.offset);
        return s + ":" + std::to_string(loc.bytes);
    }

private:
    static std::string list(const std::vector<int64_t> &values) {
        std::string s;
        for (size_t i = 0; i < values.size(); ++i) s += (i ? "," : "") + std::to_string(values[i]);
        return s;
    }

    static std::string window(const Window &w) {
        std::ostringstream s;
        s << " k=" << w.kernel_h << "x" << w.kernel_w << " s=" << w.stride_h << "x" << w.stride_w
          << " d=" << w.dilation_h << "x" << w.dilation_w << " pad=" << w.pad_top << "," << w.pad_bottom << ","
          << w.pad_left << "," << w.pad_right << " groups=" << w.groups << " " << layout_name(w.data);
        if (w.weights != Layout::None) s << "/" << layout_name(w.weights);
        if (w.count_include_pad) s << " count_include_pad";
        return s.str();
    }

    static std::string attributes(const Call &c) {
        std::ostringstream s;
        switch (c.op) {
            case Op::Constant:
                if (c.dtype == DType::U64) s << " bits=0x" << std::hex << c.bits;
                else s << " value=" << c.value;
                break;
            case Op::Transpose: s << " perm=" << list(c.ints); break;
            case Op::Slice: s << " starts=" << list(c.ints) << " ends=" << list(c.ints2); break;
            case Op::Pad: s << " before=" << list(c.ints) << " after=" << list(c.ints2) << " value=" << c.value; break;
            case Op::ReduceSum: case Op::ReduceMax: case Op::ReduceMin: s << " axes=" << list(c.ints); break;
            case Op::ArgMax: case Op::Softmax: case Op::Concat: case Op::Gather: case Op::ScatterAdd:
            case Op::Coordinate:
                s << " axis=" << c.axis;
                break;
            case Op::OneHot: s << " depth=" << c.ints.at(0) << " axis=" << c.axis; break;
            case Op::Conv2d: case Op::Conv2dDataGradient: case Op::Conv2dWeightsGradient:
            case Op::MaxPool2d: case Op::AvgPool2d: case Op::MaxPool2dGradient: case Op::AvgPool2dGradient:
                s << window(c.window);
                break;
            default: break;
        }
        return s.str();
    }

    size_t segment_ = 0;
    Tensor next_ = 0;
};

}  // namespace fm::metal
