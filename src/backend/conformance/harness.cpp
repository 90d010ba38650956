#include "backend/conformance/harness.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>

#include <fmt/format.h>

#include "core/error.h"

namespace keel::backend::conformance {

// ---- Buffer

void Buffer::Free::operator()(uint8_t* p) const {
  std::free(p);
}

Buffer::Buffer(std::string name, DType dt, int64_t n, bool f64)
    : name_(std::move(name)), dt_(dt), f64_(f64), n_(n) {
  bytes_ = f64 ? size_t(n) * 8 : dtype_bytes(dt, size_t(n));
  size_t total = (2 * kGuard + bytes_ + 63) / 64 * 64;
  mem_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, total)));
  if (!mem_) fail("conformance: out of memory for buffer '{}' ({} bytes)", name_, bytes_);
  std::memset(mem_.get(), kSentinel, kGuard);
  std::memset(mem_.get() + kGuard, 0, bytes_);
  std::memset(mem_.get() + kGuard + bytes_, kSentinel, kGuard);
}

Buffer::Buffer(const Buffer& o) : Buffer(o.name_, o.dt_, o.n_, o.f64_) {
  std::memcpy(mem_.get(), o.mem_.get(), 2 * kGuard + bytes_);
}

Buffer& Buffer::operator=(const Buffer& o) {
  if (this != &o) *this = Buffer(o);
  return *this;
}

bool Buffer::guards_intact() const {
  const uint8_t* p = mem_.get();
  for (size_t i = 0; i < kGuard; ++i)
    if (p[i] != kSentinel || p[kGuard + bytes_ + i] != kSentinel) return false;
  return true;
}

bool Buffer::same_bytes(const Buffer& o) const {
  return bytes_ == o.bytes_ && std::memcmp(mem_.get(), o.mem_.get(), 2 * kGuard + bytes_) == 0;
}

bool Buffer::same_body(const Buffer& o) const {
  return bytes_ == o.bytes_ && std::memcmp(data(), o.data(), bytes_) == 0;
}

std::vector<double> Buffer::values() const {
  std::vector<double> v(static_cast<size_t>(n_));
  if (f64_) {
    std::memcpy(v.data(), data(), bytes_);
    return v;
  }
  switch (dt_) {
    case DType::F32:
      for (int64_t i = 0; i < n_; ++i) v[i] = as<float>()[i];
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n_; ++i) v[i] = bf16_to_f32(as<uint16_t>()[i]);
      break;
    case DType::F16:
      for (int64_t i = 0; i < n_; ++i) v[i] = f16_to_f32(as<uint16_t>()[i]);
      break;
    case DType::I8:
      for (int64_t i = 0; i < n_; ++i) v[i] = as<int8_t>()[i];
      break;
    case DType::I32:
      for (int64_t i = 0; i < n_; ++i) v[i] = as<int32_t>()[i];
      break;
    case DType::Q8_0:
      for (int64_t b = 0; b < n_ / kQBlock; ++b) {
        const BlockQ8_0& blk = as<BlockQ8_0>()[b];
        double d = f16_to_f32(blk.d);
        for (int j = 0; j < kQBlock; ++j) v[b * kQBlock + j] = d * blk.qs[j];
      }
      break;
    case DType::Q4_0:
      for (int64_t b = 0; b < n_ / kQBlock; ++b) {
        const BlockQ4_0& blk = as<BlockQ4_0>()[b];
        double d = f16_to_f32(blk.d);
        for (int j = 0; j < kQBlock / 2; ++j) {
          v[b * kQBlock + j] = d * ((blk.qs[j] & 0xf) - 8);
          v[b * kQBlock + j + 16] = d * ((blk.qs[j] >> 4) - 8);
        }
      }
      break;
  }
  return v;
}

void Buffer::set(int64_t i, float v) {
  if (f64_) {
    as<double>()[i] = v;
    return;
  }
  switch (dt_) {
    case DType::F32:
      as<float>()[i] = v;
      break;
    case DType::BF16:
      as<uint16_t>()[i] = f32_to_bf16(v);
      break;
    case DType::F16:
      as<uint16_t>()[i] = f32_to_f16(v);
      break;
    case DType::I8:
      as<int8_t>()[i] = int8_t(std::clamp(std::nearbyint(v), -128.f, 127.f));
      break;
    case DType::I32:
      as<int32_t>()[i] = int32_t(v);
      break;
    default:
      fail("conformance: cannot set elements of a {} buffer", dtype_name(dt_));
  }
}

// ---- Gen

void Gen::normal(Buffer& b, float stddev, float mean) {
  for (int64_t i = 0; i < b.size(); ++i) b.set(i, mean + stddev * normal());
}

void Gen::uniform(Buffer& b, float lo, float hi) {
  for (int64_t i = 0; i < b.size(); ++i) b.set(i, uniform(lo, hi));
}

// ---- tolerances
//
// Errors are normalised per element: err = |cand - ref| / (|ref| + rms(ref)),
// rms over the whole output. Large elements are thus held to a relative
// bound and elements near zero (cancellation in a sum) to a bound relative to
// the typical magnitude, like ggml's normalised mean squared error but per
// element, so one bad element cannot hide in a large tensor.
//
// base_f32 (set per kernel family) covers f32 results: reassociated sums
// (vector lanes, blocked GEMM) and polynomial exp/tanh approximations differ
// from the scalar oracle in the last few bits, ~1e-6 relative; families with
// transcendental functions or long dependency chains get 1e-4, plain
// arithmetic 2e-5. A 16-bit output is the rounding of such an f32 value, and
// two f32 values a few ulp apart can round to neighbouring 16-bit values: one
// bf16 ulp is 2^-8..2^-7 relative (8 significant bits), so bf16 outputs get
// 1e-2 (one ulp passes, two fail); one f16 ulp is 2^-11..2^-10, so f16 gets
// 2e-3. Codes of quantized outputs use base_f32 as set by their family.
double output_tolerance(double base_f32, DType out_dt) {
  switch (out_dt) {
    case DType::BF16:
      return std::max(base_f32, 1e-2);
    case DType::F16:
      return std::max(base_f32, 2e-3);
    default:
      return base_f32;
  }
}

namespace {

struct CompareResult {
  double max_abs = 0, max_rel = 0;
  std::string bad;    // first violation, "" when within tolerance
  std::string worst;  // element with the largest error
};

std::string show(double v) {
  return fmt::format("{:.7g}", v);
}

CompareResult compare(const Buffer& cand, const Buffer& ref, double tol) {
  CompareResult r;
  std::vector<double> c = cand.values(), o = ref.values();
  double ss = 0;
  int64_t finite = 0;
  for (double x : o)
    if (std::isfinite(x)) ss += x * x, ++finite;
  double rms = finite ? std::sqrt(ss / double(finite)) : 0.0;
  for (size_t i = 0; i < c.size(); ++i) {
    auto note = [&](const std::string& why) {
      if (r.bad.empty())
        r.bad = fmt::format("{}[{}] = {} vs oracle {}: {}", cand.name(), i, show(c[i]), show(o[i]),
                            why);
    };
    if (std::isnan(o[i]) || std::isnan(c[i])) {
      if (std::isnan(o[i]) != std::isnan(c[i])) note("NaN mismatch");
      continue;
    }
    if (std::isinf(o[i]) || std::isinf(c[i])) {
      if (c[i] != o[i]) note("Inf mismatch");
      continue;
    }
    double abs = std::fabs(c[i] - o[i]);
    double den = std::fabs(o[i]) + rms;
    double rel = abs == 0 ? 0 : (den > 0 ? abs / den : INFINITY);
    r.max_abs = std::max(r.max_abs, abs);
    if (rel > r.max_rel) {
      r.max_rel = rel;
      r.worst = fmt::format("{}[{}] = {} vs oracle {}", cand.name(), i, show(c[i]), show(o[i]));
    }
    if (rel > tol) note(fmt::format("error {:.3g} > tolerance {:.3g}", rel, tol));
    // An exact comparison (casts) also distinguishes -0 from +0.
    if (tol == 0 && abs == 0 && std::signbit(c[i]) != std::signbit(o[i])) note("sign of zero");
  }
  return r;
}

uint64_t fnv1a(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (char ch : s) h = (h ^ uint8_t(ch)) * 1099511628211ull;
  return h;
}

}  // namespace

// ---- Harness

Harness::Harness(Backend& candidate, Backend& oracle, const ConformanceOptions& opts)
    : cand_(candidate), oracle_(&oracle), opts_(opts) {}

Harness::Harness(Backend& be, int threads_a, int threads_b, const ConformanceOptions& opts)
    : cand_(be), threads_a_(threads_a), threads_b_(threads_b), opts_(opts) {}

bool Harness::wants(Kernel k) const {
  if (opts_.kernel && *opts_.kernel != k) return false;
  return std::find(opts_.skip_kernels.begin(), opts_.skip_kernels.end(), k) ==
         opts_.skip_kernels.end();
}

void Harness::close_row() {
  if (!rows_.empty() && opts_.on_row) opts_.on_row(rows_.back());
}

std::vector<ConformanceRow> Harness::take_rows() {
  close_row();
  return std::move(rows_);
}

bool Harness::row(Kernel k, std::string name, std::string dtype, Direction dir, double base_tol,
                  std::initializer_list<DType> needs) {
  close_row();
  ConformanceRow r;
  r.kernel = k;
  r.name = std::move(name);
  r.dtype = std::move(dtype);
  r.dir = dir;
  base_tol_ = base_tol;
  wide16_ = 1;
  case_counter_ = fnv1a(r.name + "/" + r.dtype + "/" + std::string(direction_name(dir))) << 16;
  open_ = true;
  for (DType d : needs) {
    const char* who = nullptr;
    if (!cand_.supports(k, d))
      who = "candidate";
    else if (oracle_ && !oracle_->supports(k, d))
      who = "oracle";
    if (who) {
      Backend& be = who[0] == 'c' ? cand_ : *oracle_;
      r.status = ConformanceStatus::Skip;
      r.detail = fmt::format("{} '{}' does not support {} in {}", who, be.name(), kernel_name(k),
                             dtype_name(d));
      open_ = false;
      break;
    }
  }
  rows_.push_back(std::move(r));
  return open_;
}

Gen Harness::gen() {
  return Gen(Rng(opts_.seed, case_counter_++));
}

void Harness::abort_row(const std::string& why) {
  if (rows_.empty() || !open_) return;
  fail_case("preparing case", why);
  open_ = false;
}

bool Harness::anyone_supports(Kernel k, DType dt) const {
  return cand_.supports(k, dt) || (oracle_ && oracle_->supports(k, dt));
}

void Harness::fail_case(const std::string& desc, const std::string& why) {
  ConformanceRow& r = rows_.back();
  if (r.status != ConformanceStatus::Fail) {
    r.status = ConformanceStatus::Fail;
    r.detail = fmt::format("{}: {}", desc, why);
  }
}

namespace {

// Device copies of every buffer of a case, guards included, for a backend
// whose memory is not the host's; back() brings them home, so the guard and
// input checks below read what the device really wrote.
class DeviceMirror {
 public:
  DeviceMirror(Backend& be, Io& io) : be_(be), io_(io) {
    if (be.host_memory()) return;
    mirror(io.in, io.din);
    mirror(io.out, io.dout);
  }
  ~DeviceMirror() {
    for (void* p : held_) be_.release(p);
    io_.din.clear();
    io_.dout.clear();
  }
  void back() {
    if (be_.host_memory()) return;
    be_.synchronize();
    for (size_t k = 0; k < io_.in.size(); ++k)
      be_.download(io_.in[k].raw(), base(io_.din[k]), io_.in[k].raw_bytes());
    for (size_t k = 0; k < io_.out.size(); ++k)
      be_.download(io_.out[k].raw(), base(io_.dout[k]), io_.out[k].raw_bytes());
  }

 private:
  static void* base(void* body) { return static_cast<char*>(body) - Buffer::kGuard; }
  void mirror(std::vector<Buffer>& bufs, std::vector<void*>& addrs) {
    for (Buffer& b : bufs) {
      void* d = be_.allocate(b.raw_bytes(), b.name());
      held_.push_back(d);
      be_.upload(d, b.raw(), b.raw_bytes());
      addrs.push_back(static_cast<char*>(d) + Buffer::kGuard);
    }
  }
  Backend& be_;
  Io& io_;
  std::vector<void*> held_;
};

}  // namespace

std::string Harness::run_one(Backend& be, Io& io, const Io& pristine, const Call& call) {
  try {
    DeviceMirror dev(be, io);
    call(be, io);
    dev.back();
  } catch (const std::exception& e) {
    return fmt::format("'{}' threw: {}", be.name(), e.what());
  }
  for (size_t k = 0; k < io.in.size(); ++k)
    if (!io.in[k].same_bytes(pristine.in[k]))
      return fmt::format("'{}' wrote into input {} (or its guard bytes)", be.name(),
                         io.in[k].name());
  for (const Buffer& b : io.out)
    if (!b.guards_intact())
      return fmt::format("'{}' wrote outside output {} ({} bytes): guard bytes overwritten",
                         be.name(), b.name(), b.bytes());
  return "";
}

void Harness::run(const std::string& desc, const Io& io, const Call& call) {
  KEEL_ASSERT(open_);
  ConformanceRow& r = rows_.back();
  ++r.cases;
  Io a = io, b = io;
  std::string err;
  if (oracle_) {
    err = run_one(cand_, a, io, call);
    if (err.empty()) {
      err = run_one(*oracle_, b, io, call);
      if (!err.empty()) err = "oracle " + err;
    }
  } else {
    int saved = cand_.threads();
    cand_.set_threads(threads_a_);
    err = run_one(cand_, a, io, call);
    cand_.set_threads(threads_b_);
    if (err.empty()) err = run_one(cand_, b, io, call);
    cand_.set_threads(saved);
  }
  if (!err.empty()) {
    fail_case(desc, err);
    return;
  }
  for (size_t k = 0; k < a.out.size(); ++k) {
    // Identical bytes in repeat mode: nothing to measure.
    if (!oracle_ && a.out[k].same_body(b.out[k])) continue;
    // A base of 0 demands exact results in every output dtype (casts); the
    // repeat mode demands bit-identical ones.
    double tol = a.out[k].is_f64() || base_tol_ == 0
                     ? base_tol_
                     : output_tolerance(base_tol_, a.out[k].dtype());
    if (a.out[k].dtype() == DType::BF16 || a.out[k].dtype() == DType::F16) tol *= wide16_;
    if (!oracle_) tol = 0;
    r.tolerance = std::max(r.tolerance, tol);
    CompareResult c = compare(a.out[k], b.out[k], tol);
    r.max_abs_err = std::max(r.max_abs_err, c.max_abs);
    if (c.max_rel > r.max_rel_err) {
      r.max_rel_err = c.max_rel;
      r.worst = fmt::format("{}: {}", desc, c.worst);
    }
    if (!oracle_ && !a.out[k].same_body(b.out[k]) && c.bad.empty())
      c.bad = fmt::format("{} differs bitwise between runs", a.out[k].name());
    if (!c.bad.empty()) fail_case(desc, c.bad);
  }
}

}  // namespace keel::backend::conformance
