// Tensors (a buffer with a shape) and executables (a graph bound to a
// device: its variables, constants, and a cache of plans).
#pragma once

#include <atomic>
#include <map>
#include <memory>

#include "device.h"
#include "graph.h"
#include "plan.h"

namespace fm {

class Tensor : public Object {
public:
    static constexpr ObjectKind kind = ObjectKind::Tensor;
    Tensor(std::shared_ptr<Buffer> buffer, Shape shape) : buffer(std::move(buffer)), shape(std::move(shape)) {}
    std::shared_ptr<Buffer> buffer;
    Shape shape;
};

// Throws naming `argument` for a rank above FM_MAX_RANK, negative dims or
// a NULL pointer with rank > 0.
Shape shape_argument(const int64_t *dims, size_t rank, const char *argument);

class Exec : public Object {
public:
    static constexpr ObjectKind kind = ObjectKind::Exec;

    Exec(std::shared_ptr<Graph> graph, std::shared_ptr<Device> device);
    ~Exec() override;

    const std::shared_ptr<Device> &device() const { return device_; }
    const std::shared_ptr<Graph> &graph() const { return graph_; }

    struct Feed {
        uint32_t placeholder;
        std::shared_ptr<Tensor> tensor;
    };
    std::vector<std::shared_ptr<Tensor>> run(const std::vector<Feed> &feeds,
                                             const std::vector<uint32_t> &fetches,
                                             const std::shared_ptr<Stream> &stream);

    Shape variable_shape(const std::string &name);
    void read_variable(const std::string &name, void *dst, size_t count);
    void write_variable(const std::string &name, const void *src, size_t count);
    void planned_memory(uint64_t *peak, uint64_t *unshared) const;
    // Waits for the runs so far and throws a data error one of them found
    // on the device (backends that check while running have nothing to add).
    void check_errors();
    uint64_t run_count() const { return runs_; }
    void set_run_count(uint64_t count) { runs_ = count; }

private:
    struct Compiled {
        Plan plan;
        void *ctx = nullptr;
        std::shared_ptr<Buffer> arena, scalars;
        std::vector<std::shared_ptr<Buffer>> outputs;  // of the last run, reused when released
        std::weak_ptr<Stream> outputs_stream;          // the stream that run wrote them on
        uint64_t last_used = 0;
    };
    // Plans kept at most; the least recently used goes first, with its arena.
    static constexpr size_t kMaxPlans = 16;
    void evict_old_plans(const Compiled &keep);
    Buffer &variable(int32_t slot);
    Buffer &constant(int32_t slot);
    Buffer &named_variable(const std::string &name, size_t count, const char *argument);
    Compiled &compiled(const std::vector<Feed> &feeds, const std::vector<uint32_t> &fetches);

    std::shared_ptr<Graph> graph_;
    std::shared_ptr<Device> device_;
    std::vector<std::shared_ptr<Buffer>> variables_, constants_;
    std::map<std::vector<int64_t>, std::unique_ptr<Compiled>> plans_;
    const Compiled *last_ = nullptr;
    std::atomic<uint64_t> runs_{0};  // read by run_count() without the lock
    uint64_t use_clock_ = 0;
};

// Fills `out` (count f32 values of `shape`) as `init` says, on the host.
void initialise_variable(const fm_init &init, const Shape &shape, float *out);

}  // namespace fm
