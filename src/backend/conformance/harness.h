// Machinery shared by the conformance checks of every kernel family: guarded
// buffers, seeded input generation, tolerances, and the Harness that runs one
// case on two backends (or twice on one) and folds the result into a row.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/conformance/conformance.h"
#include "core/rng.h"

namespace keel::backend::conformance {

// Sizes every family draws its extents from: 1, odd sizes, and sizes that
// are not multiples of the 8/16/32-wide vector and tile widths.
inline constexpr int64_t kSizes[] = {1, 3, 7, 17, 33, 64, 100, 257};

// A kernel buffer with kGuard sentinel bytes on each side, so a write before
// the start or past the end is caught after the call. The body is 64-byte
// aligned, as host allocations in keel are.
class Buffer {
 public:
  static constexpr size_t kGuard = 64;
  static constexpr uint8_t kSentinel = 0xA7;

  // n elements of dt (n a multiple of kQBlock for blocked types), zero-filled.
  // f64 buffers hold doubles (sum_squares' result); dt is then ignored.
  Buffer(std::string name, DType dt, int64_t n, bool f64 = false);
  Buffer(const Buffer& o);
  Buffer& operator=(const Buffer& o);
  Buffer(Buffer&&) noexcept = default;
  Buffer& operator=(Buffer&&) noexcept = default;

  const std::string& name() const { return name_; }
  DType dtype() const { return dt_; }
  bool is_f64() const { return f64_; }
  int64_t size() const { return n_; }
  size_t bytes() const { return bytes_; }
  // The whole allocation, guards included (what a device copy mirrors).
  void* raw() { return mem_.get(); }
  const void* raw() const { return mem_.get(); }
  size_t raw_bytes() const { return bytes_ + 2 * kGuard; }
  void* data() { return mem_.get() + kGuard; }
  const void* data() const { return mem_.get() + kGuard; }
  template <class T>
  T* as() {
    return static_cast<T*>(data());
  }
  template <class T>
  const T* as() const {
    return static_cast<const T*>(data());
  }
  // Both guard zones still hold the sentinel.
  bool guards_intact() const;
  // Whole allocation (guards and body) byte-identical to o's.
  bool same_bytes(const Buffer& o) const;
  // Body byte-identical to o's.
  bool same_body(const Buffer& o) const;
  // Element values as double: floats decoded, integer codes as integers,
  // Q4_0 / Q8_0 blocks dequantized.
  std::vector<double> values() const;
  // Stores v (converted to dtype, round to nearest even) at element i.
  void set(int64_t i, float v);

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::string name_;
  DType dt_;
  bool f64_;
  int64_t n_;
  size_t bytes_;
  std::unique_ptr<uint8_t[], Free> mem_;
};

// Seeded inputs for one case: every value is a function of (seed, case).
class Gen {
 public:
  explicit Gen(Rng rng) : rng_(rng) {}
  float normal() { return rng_.normal(ctr_++); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * rng_.uniform(ctr_++); }
  int64_t below(int64_t n) { return int64_t(rng_.below(ctr_++, uint64_t(n))); }
  // mean + stddev * N(0,1) in every element.
  void normal(Buffer& b, float stddev, float mean = 0.f);
  void uniform(Buffer& b, float lo, float hi);

 private:
  Rng rng_;
  uint64_t ctr_ = 0;
};

// The inputs (read-only for the kernel) and outputs of one case. Outputs
// start from the contents given here, so accumulating kernels are checked
// against non-zero gradients and in-place kernels read their input from them.
// A call reaches the buffers through i()/o(): their host memory, or for a
// device backend the device copies the harness made (din/dout).
struct Io {
  std::vector<Buffer> in, out;
  std::vector<void*> din, dout;  // empty: the kernel reads host memory
  const void* i(size_t k) const { return din.empty() ? in[k].data() : din[k]; }
  void* o(size_t k) { return dout.empty() ? out[k].data() : dout[k]; }
  template <class T>
  const T* it(size_t k) const {
    return static_cast<const T*>(i(k));
  }
  template <class T>
  T* ot(size_t k) {
    return static_cast<T*>(o(k));
  }
};
using Call = std::function<void(Backend&, Io&)>;

// Tolerance of one output buffer: base_f32 for f32 results, widened to what
// two correct roundings to a 16-bit type can differ by (see harness.cpp).
double output_tolerance(double base_f32, DType out_dt);

class Harness {
 public:
  // Compare mode: candidate against oracle.
  Harness(Backend& candidate, Backend& oracle, const ConformanceOptions& opts);
  // Repeat mode: be against itself, threads_a then threads_b, bit-exact.
  Harness(Backend& be, int threads_a, int threads_b, const ConformanceOptions& opts);

  bool wants(Kernel k) const;
  bool large() const { return opts_.large; }
  // base, plus big when large cases are on.
  template <class T>
  std::vector<T> pick(std::initializer_list<T> base, std::initializer_list<T> big) const {
    std::vector<T> v(base);
    if (opts_.large) v.insert(v.end(), big);
    return v;
  }
  // An inner extent list: big when the outer extent is a large one, so large
  // cases pair with large cases instead of multiplying the whole grid.
  static std::vector<int64_t> either(bool is_big, std::initializer_list<int64_t> base,
                                     std::initializer_list<int64_t> big) {
    return is_big ? std::vector<int64_t>(big) : std::vector<int64_t>(base);
  }
  // Opens a row; returns false (row recorded as SKIP) when the candidate (or
  // the oracle) does not support kernel k in every one of `needs`.
  bool row(Kernel k, std::string name, std::string dtype, Direction dir, double base_tol,
           std::initializer_list<DType> needs);
  // Multiplies the 16-bit output tolerance of the open row, for a kernel whose
  // exact answer depends on a rounded input (see check_attention.cpp).
  void widen_16bit_tolerance(double factor) { wide16_ = factor; }
  // Backend for preparing consistent inputs (the oracle; in repeat mode the
  // backend itself), e.g. saved statistics for a backward case.
  Backend& input_backend() { return oracle_ ? *oracle_ : cand_; }
  // Fresh generator for the next case of the open row.
  Gen gen();
  // Runs one case of the open row and folds its result into the row.
  void run(const std::string& desc, const Io& io, const Call& call);

  // Marks the open row FAIL (e.g. the oracle could not prepare inputs).
  void abort_row(const std::string& why);
  // Whether the candidate or the oracle claims kernel k in dt.
  bool anyone_supports(Kernel k, DType dt) const;

  // Completes the last row and hands all rows over.
  std::vector<ConformanceRow> take_rows();

 private:
  void fail_case(const std::string& desc, const std::string& why);
  void close_row();
  // Runs call on be over io; returns the error text if it threw or broke
  // an input or a guard, else "".
  std::string run_one(Backend& be, Io& io, const Io& pristine, const Call& call);

  Backend& cand_;
  Backend* oracle_ = nullptr;
  int threads_a_ = 0, threads_b_ = 0;
  ConformanceOptions opts_;
  std::vector<ConformanceRow> rows_;
  double base_tol_ = 0;
  double wide16_ = 1;
  bool open_ = false;
  uint64_t case_counter_ = 0;
};

}  // namespace keel::backend::conformance
