// A caching allocator for large CPU tensors (docs/ops.md "CPU allocator"), installed as torch's CPU allocator by
// ops.cpu_allocator.set_cpu_allocator.
//
// Requests of at least min_bytes get anonymous mappings (64 KiB granules; 2 MiB granules on transparent huge pages
// from 4 MiB on) that stay mapped when freed: a request takes the best-fitting free range (the rest of it stays
// free) and a freed range merges with its free neighbours. Smaller requests go to torch's default allocator. A
// training step allocates the same large shapes every iteration, so after the first one nearly every request is
// served without page faults, and no small allocation settles inside a freed large block (the fragmentation of
// glibc's heap, docs/performance.md). Footprint bound: before mapping a new range, the least recently freed ranges
// are unmapped until the mapped bytes stay within the peak of the live bytes plus slack_bytes.
#include <pthread.h>
#include <sys/mman.h>

#include <c10/core/CPUAllocator.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

namespace suite_ops {
namespace {

constexpr size_t kGranule = size_t(64) << 10;
constexpr size_t kHugePage = size_t(2) << 20;

size_t round_up(size_t n, size_t granule) { return (n + granule - 1) / granule * granule; }

// Ranges of 4 MiB and more are whole huge pages; smaller ones 64 KiB granules.
size_t granule_of(size_t n) { return n >= 2 * kHugePage ? kHugePage : kGranule; }

class LargeBlockCache final : public c10::Allocator {
 public:
  static LargeBlockCache& instance() {
    static LargeBlockCache* cache = new LargeBlockCache();  // never destroyed: blocks may outlive static teardown
    return *cache;
  }

  c10::DataPtr allocate(size_t n) override {
    if (n < min_bytes_.load(std::memory_order_relaxed)) return c10::GetDefaultCPUAllocator()->allocate(n);
    void* ptr = acquire(n);
    return {ptr, ptr, &deleter, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &deleter; }

  void copy_data(void* dest, const void* src, size_t count) const override { default_copy_data(dest, src, count); }

  void configure(bool enable, int64_t min_bytes, int64_t slack_bytes) {
    TORCH_CHECK(min_bytes >= 1, "suite_ops::cpu_allocator_configure: min_bytes must be >= 1, got ", min_bytes);
    TORCH_CHECK(slack_bytes >= 0, "suite_ops::cpu_allocator_configure: slack_bytes must be >= 0, got ", slack_bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    min_bytes_.store(static_cast<size_t>(min_bytes));
    slack_ = static_cast<size_t>(slack_bytes);
    enabled_ = enable;
    if (enable) {
      c10::SetCPUAllocator(this, kPriority);
      TORCH_CHECK(c10::GetCPUAllocator() == this,
                  "suite_ops::cpu_allocator_configure: another CPU allocator with a higher priority is installed");
    } else {
      if (c10::GetCPUAllocator() == this) c10::SetCPUAllocator(c10::GetDefaultCPUAllocator(), kPriority);
      unmap_oldest(cached_);
    }
  }

  // enabled, min_bytes, slack_bytes, live, peak live, cached, mapped, peak mapped, hits, misses, unmapped blocks.
  std::vector<int64_t> stats(bool reset_peaks) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<int64_t> out = {c10::GetCPUAllocator() == this,
                                static_cast<int64_t>(min_bytes_.load()),
                                static_cast<int64_t>(slack_),
                                static_cast<int64_t>(live_),
                                static_cast<int64_t>(peak_live_),
                                static_cast<int64_t>(cached_),
                                static_cast<int64_t>(live_ + cached_),
                                static_cast<int64_t>(peak_mapped_),
                                hits_,
                                misses_,
                                unmapped_};
    if (reset_peaks) {
      peak_live_ = live_;
      peak_mapped_ = live_ + cached_;
    }
    return out;
  }

  void lock() { mutex_.lock(); }
  void unlock() { mutex_.unlock(); }

 private:
  static constexpr uint8_t kPriority = 1;

  struct FreeRange {
    size_t size;
    std::list<uintptr_t>::iterator recency;
  };

  LargeBlockCache() {
    // A fork (DataLoader workers) must not copy the mutex while another thread holds it.
    pthread_atfork([] { instance().lock(); }, [] { instance().unlock(); }, [] { instance().unlock(); });
  }

  static void deleter(void* ptr) { instance().release(ptr); }

  void* acquire(size_t n) {
    const size_t size = round_up(n, granule_of(n));
    std::lock_guard<std::mutex> lock(mutex_);
    uintptr_t addr = 0;
    auto fit = by_size_.lower_bound({size, 0});
    if (fit != by_size_.end()) {  // best fit; the rest of the range stays free
      addr = fit->second;
      const size_t range = fit->first;
      auto recency = free_.at(addr).recency;
      erase_free(addr);
      if (range > size) {
        *recency = addr + size;
        insert_free(addr + size, range - size, recency);
      } else {
        recency_.erase(recency);
      }
      ++hits_;
    } else {
      peak_live_ = std::max(peak_live_, live_ + size);
      if (live_ + cached_ + size > peak_live_ + slack_) unmap_oldest(live_ + cached_ + size - peak_live_ - slack_);
      void* ptr = map_range(size);
      if (ptr == nullptr) {
        unmap_oldest(cached_);
        ptr = map_range(size);
      }
      TORCH_CHECK(ptr != nullptr, "suite_ops CPU allocator: out of memory mapping ", size, " bytes (",
                  live_ >> 20, " MiB live)");
      addr = reinterpret_cast<uintptr_t>(ptr);
      ++misses_;
    }
    live_ += size;
    live_blocks_.emplace(addr, size);
    peak_live_ = std::max(peak_live_, live_);
    peak_mapped_ = std::max(peak_mapped_, live_ + cached_);
    return reinterpret_cast<void*>(addr);
  }

  void release(void* ptr) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto live = live_blocks_.find(reinterpret_cast<uintptr_t>(ptr));
    if (live == live_blocks_.end()) {  // a small block of the default allocator (raw_deallocate)
      lock.unlock();
      const c10::DeleterFnPtr default_deleter = c10::GetDefaultCPUAllocator()->raw_deleter();
      TORCH_INTERNAL_ASSERT(default_deleter != nullptr, "torch's default CPU allocator has no raw deleter");
      default_deleter(ptr);
      return;
    }
    uintptr_t addr = live->first;
    size_t size = live->second;
    live_blocks_.erase(live);
    live_ -= size;
    if (!enabled_) {
      munmap(ptr, size);
      ++unmapped_;
      return;
    }
    // Coalesce with free neighbours (adjacent mappings form one usable range); the result is the most recent.
    auto next = free_.find(addr + size);
    if (next != free_.end()) {
      const size_t next_size = next->second.size;
      recency_.erase(next->second.recency);
      erase_free(addr + size);
      size += next_size;
    }
    auto prev = free_.lower_bound(addr);
    if (prev != free_.begin()) --prev;
    if (prev != free_.end() && prev->first + prev->second.size == addr) {
      const uintptr_t prev_addr = prev->first;
      const size_t prev_size = prev->second.size;
      recency_.erase(prev->second.recency);
      erase_free(prev_addr);
      addr = prev_addr;
      size += prev_size;
    }
    recency_.push_front(addr);
    insert_free(addr, size, recency_.begin());
  }

  void insert_free(uintptr_t addr, size_t size, std::list<uintptr_t>::iterator recency) {
    free_.emplace(addr, FreeRange{size, recency});
    by_size_.emplace(size, addr);
    cached_ += size;
  }

  void erase_free(uintptr_t addr) {
    auto it = free_.find(addr);
    by_size_.erase({it->second.size, addr});
    cached_ -= it->second.size;
    free_.erase(it);
  }

  // Unmaps at least `bytes` (or everything cached) from the least recently freed ranges, each from its end.
  void unmap_oldest(size_t bytes) {
    while (bytes > 0 && !recency_.empty()) {
      const uintptr_t addr = recency_.back();
      const size_t size = free_.at(addr).size;
      const size_t cut = std::min(size, round_up(bytes, granule_of(size)));
      erase_free(addr);
      if (cut < size) {
        insert_free(addr, size - cut, std::prev(recency_.end()));
      } else {
        recency_.pop_back();
      }
      munmap(reinterpret_cast<void*>(addr + size - cut), cut);
      ++unmapped_;
      bytes -= std::min(bytes, cut);
    }
  }

  void* map_range(size_t size) {
    if (granule_of(size) == kGranule) {
      void* ptr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      return ptr == MAP_FAILED ? nullptr : ptr;
    }
    // Over-map by one huge page, keep the 2 MiB-aligned part so that the kernel can back it with huge pages.
    void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = round_up(start, kHugePage);
    if (aligned > start) munmap(raw, aligned - start);
    const uintptr_t tail = start + kHugePage - aligned;
    if (tail > 0) munmap(reinterpret_cast<void*>(aligned + size), tail);
    madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);
    return reinterpret_cast<void*>(aligned);
  }

  std::mutex mutex_;
  std::atomic<size_t> min_bytes_{size_t(1) << 20};
  size_t slack_ = size_t(64) << 20;
  bool enabled_ = false;
  std::map<uintptr_t, FreeRange> free_;                // free ranges by address (for coalescing)
  std::set<std::pair<size_t, uintptr_t>> by_size_;     // the same ranges by size (best fit)
  std::list<uintptr_t> recency_;                       // their addresses, most recently freed first
  std::unordered_map<uintptr_t, size_t> live_blocks_;  // address -> size of the blocks in use
  size_t live_ = 0, cached_ = 0, peak_live_ = 0, peak_mapped_ = 0;
  int64_t hits_ = 0, misses_ = 0, unmapped_ = 0;
};

void cpu_allocator_configure(bool enable, int64_t min_bytes, int64_t slack_bytes) {
  LargeBlockCache::instance().configure(enable, min_bytes, slack_bytes);
}

std::vector<int64_t> cpu_allocator_stats(bool reset_peaks) { return LargeBlockCache::instance().stats(reset_peaks); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(suite_ops, m) {
  m.def("cpu_allocator_configure(bool enable, int min_bytes, int slack_bytes) -> ()", &cpu_allocator_configure);
  m.def("cpu_allocator_stats(bool reset_peaks) -> int[]", &cpu_allocator_stats);
}

}  // namespace suite_ops
