#include "thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <exception>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FM_CPU_RELAX() _mm_pause()
#else
#define FM_CPU_RELAX() std::this_thread::yield()
#endif

namespace fm::cpu {

namespace {
// Spin iterations (one pause each, about 40 ns on current x86) before a
// thread waiting for work, or for its helpers, blocks: about 100 us, long
// enough to bridge consecutive kernels of one training step.
constexpr int kSpins = 2500;

size_t configured_threads() {
    if (const char *env = std::getenv("FERROMETAL_NUM_THREADS")) {
        long n = std::strtol(env, nullptr, 10);
        if (n > 0) return static_cast<size_t>(n);
    }
    return std::max(1u, std::thread::hardware_concurrency());
}
}  // namespace

ThreadPool::ThreadPool(size_t threads) {
    if (threads == 0) threads = configured_threads();
    for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (auto &worker : workers_) worker.join();
}

ThreadPool &ThreadPool::global() {
    // Leaked on purpose: worker threads must not be joined during static
    // destruction, when other statics they might touch are gone.
    static ThreadPool *pool = new ThreadPool();
    return *pool;
}

void ThreadPool::drain(size_t generation) {
    for (;;) {
        size_t index;
        const std::function<void(size_t)> *task;
        {
            // The task and its index are taken together, for this run only:
            // a worker that wakes late must not apply an old task to the
            // indices of a newer run.
            std::lock_guard<std::mutex> lock(mutex_);
            if (generation_ != generation || next_ >= tasks_) return;
            index = next_++;
            task = task_;
        }
        try {
            (*task)(index);
        } catch (...) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!error_) error_ = std::current_exception();
        }
        std::lock_guard<std::mutex> lock(mutex_);
        published_finished_.store(++finished_, std::memory_order_release);
        if (finished_ == tasks_) done_.notify_all();
    }
}

void ThreadPool::worker_loop() {
    size_t seen = 0;
    for (;;) {
        for (int i = 0; i < kSpins && published_generation_.load(std::memory_order_acquire) == seen; ++i) {
            FM_CPU_RELAX();
        }
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
            if (stopping_) return;
            seen = generation_;
        }
        drain(seen);
    }
}

void ThreadPool::run(size_t tasks, const std::function<void(size_t)> &task) {
    if (tasks == 0) return;
    if (tasks == 1 || workers_.empty()) {
        for (size_t i = 0; i < tasks; ++i) task(i);
        return;
    }
    std::lock_guard<std::mutex> one_run(run_mutex_);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        task_ = &task;
        next_ = 0;
        tasks_ = tasks;
        finished_ = 0;
        error_ = nullptr;
        published_finished_.store(0, std::memory_order_release);
        published_generation_.store(++generation_, std::memory_order_release);
    }
    size_t generation;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        generation = generation_;
    }
    wake_.notify_all();
    drain(generation);
    std::exception_ptr error;
    for (int i = 0; i < kSpins && published_finished_.load(std::memory_order_acquire) != tasks; ++i) {
        FM_CPU_RELAX();
    }
    {
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [&] { return finished_ == tasks_; });
        error = error_;
        task_ = nullptr;
    }
    if (error) std::rethrow_exception(error);
}

void ThreadPool::parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)> &body) {
    if (n == 0) return;
    grain = std::max<size_t>(grain, 1);
    size_t chunks = (n + grain - 1) / grain;
    size_t per_chunk = (n + chunks - 1) / chunks;
    run(chunks, [&](size_t chunk) {
        size_t begin = chunk * per_chunk;
        size_t end = std::min(n, begin + per_chunk);
        if (begin < end) body(begin, end);
    });
}

}  // namespace fm::cpu
