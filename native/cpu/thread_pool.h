// A fixed pool of worker threads for CPU kernels. Work is split into a
// number of tasks chosen by the caller from the problem size, never from
// the thread count, so every result is the same whatever the number of
// threads (each task's arithmetic runs in a fixed order).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fm::cpu {

class ThreadPool {
public:
    // `threads` == 0: one per hardware thread, or FERROMETAL_NUM_THREADS.
    explicit ThreadPool(size_t threads = 0);
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    size_t threads() const { return workers_.size() + 1; }

    // Runs task(i) for every i in [0, tasks), spread over the threads (the
    // caller's too), and returns when all are done. The first exception a
    // task throws is rethrown here. Not reentrant: a task must not call run.
    void run(size_t tasks, const std::function<void(size_t)> &task);

    // Splits [0, n) into chunks of at least `grain` items and runs
    // body(begin, end) on each; the chunking depends on n and grain only.
    void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)> &body);

    // The process-wide pool the CPU backend uses.
    static ThreadPool &global();

private:
    void worker_loop();
    void drain(size_t generation);

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable done_;
    const std::function<void(size_t)> *task_ = nullptr;
    size_t next_ = 0;
    size_t tasks_ = 0;
    size_t finished_ = 0;
    size_t generation_ = 0;
    bool stopping_ = false;
    // Copies of generation_ and finished_, written under mutex_, read without
    // it by threads that spin briefly before blocking (a futex wake-up costs
    // more than many of the kernels of a small model).
    std::atomic<size_t> published_generation_{0};
    std::atomic<size_t> published_finished_{0};
    std::exception_ptr error_;
    std::mutex run_mutex_;  // one run at a time
};

}  // namespace fm::cpu
