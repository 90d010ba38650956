// The vulkan backend on the chosen device (KEEL_VULKAN_DEVICE) beside the cpu
// backend in the same run, both driven through backend.h's interface with
// memory each backend allocated itself: one JSON line per kernel, GFLOP/s
// for the compute-bound ones and GB/s for the memory-bound ones, plus the
// host<->device copy rate. On lavapipe (a CPU device) the point is that
// every kernel runs, not its speed; the output says so.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.h"

namespace {

using keel::DType;
using keel::backend::Backend;
namespace kb = keel::backend;

// Seconds per call of f (which ends with a synchronize), after one warm-up,
// over enough calls for ~0.3 s.
double per_call(const std::function<void()>& f) {
  f();
  int reps = 1;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0.3 || reps >= 1 << 14) return s / reps;
    reps *= 2;
  }
}

// Memory of one backend holding a copy of host bytes.
class DevBuf {
 public:
  DevBuf(Backend& be, const void* src, size_t bytes) : be_(be), p_(be.allocate(bytes, "bench")) {
    if (src) be.upload(p_, src, bytes);
  }
  template <class T>
  DevBuf(Backend& be, const std::vector<T>& v) : DevBuf(be, v.data(), v.size() * sizeof(T)) {}
  ~DevBuf() { be_.release(p_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void* p() const { return p_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  Backend& be_;
  void* p_;
};

// A kernel case: sets up its buffers on a backend and returns the call.
using Bufs = std::vector<std::unique_ptr<DevBuf>>;
using Case = std::function<std::function<void()>(Backend&, Bufs&)>;

struct Rates {
  double vulkan = 0, cpu = 0;
};

Rates time_case(Backend& vk, Backend& cpu, const Case& c) {
  Rates r;
  for (Backend* be : {&vk, &cpu}) {
    Bufs bufs;
    const std::function<void()> call = c(*be, bufs);
    const double s = per_call([&] {
      call();
      be->synchronize();
    });
    (be == &vk ? r.vulkan : r.cpu) = 1.0 / s;
  }
  return r;
}

std::string device_note(const Backend& vk) {
  return vk.describe().find("[cpu]") != std::string::npos
             ? "CPU Vulkan device (lavapipe): the point is correctness, not speed"
             : "GPU device";
}

void line(const Backend& vk, const std::string& kernel, const std::string& shape, const char* unit,
          double work, const Rates& r) {
  std::printf(
      "{\"bench\": \"vulkan\", \"kernel\": \"%s\", \"shape\": \"%s\", \"vulkan_%s\": %.2f, "
      "\"cpu_backend_%s\": %.2f, \"vulkan_vs_cpu\": %.3f, \"device\": \"%s\", \"note\": \"%s\"}\n",
      kernel.c_str(), shape.c_str(), unit, work * r.vulkan * 1e-9, unit, work * r.cpu * 1e-9,
      r.vulkan / r.cpu, vk.describe().c_str(), device_note(vk).c_str());
  std::fflush(stdout);
}

std::unique_ptr<DevBuf> buf(Backend& be, const std::vector<float>& v) {
  return std::make_unique<DevBuf>(be, v);
}
std::unique_ptr<DevBuf> zeros(Backend& be, size_t bytes) {
  return std::make_unique<DevBuf>(be, nullptr, bytes);
}

void bench_matmul(Backend& vk, Backend& cpu, int64_t n, DType dt) {
  kb::MatmulArgs a;
  a.M = a.N = a.K = n;
  a.lda = a.ldb = a.ldc = n;
  a.trans_b = true;  // weights stored out x in, as in a linear layer
  a.a_dtype = a.b_dtype = dt;
  const Case c = [&](Backend& be, Bufs& b) {
    if (dt == DType::F32) {
      b.push_back(buf(be, keel::bench::filled(size_t(n * n), 1.f, 1)));
      b.push_back(buf(be, keel::bench::filled(size_t(n * n), 1.f, 2)));
    } else {
      b.push_back(std::make_unique<DevBuf>(be, keel::bench::filled_bf16(size_t(n * n), 1.f, 1)));
      b.push_back(std::make_unique<DevBuf>(be, keel::bench::filled_bf16(size_t(n * n), 1.f, 2)));
    }
    b.push_back(zeros(be, size_t(n * n) * 4));
    return std::function<void()>(
        [&be, a, A = b[0]->p(), B = b[1]->p(), C = b[2]->p()] { be.matmul(a, A, B, C); });
  };
  const std::string s = std::to_string(n);
  line(vk, dt == DType::F32 ? "matmul_f32" : "matmul_bf16_f32", s + "x" + s + "x" + s + "/NT",
       "gflop_s", 2.0 * double(n) * double(n) * double(n), time_case(vk, cpu, c));
}

void bench_attention(Backend& vk, Backend& cpu) {
  kb::AttentionArgs a;
  a.B = 2;
  a.Tq = a.Tk = 128;
  a.NH = a.NKV = 8;
  a.HS = 64;
  a.q_row_stride = a.kv_row_stride = a.NH * a.HS;
  a.q_batch_stride = a.kv_batch_stride = a.Tq * a.q_row_stride;
  a.scale = 1.f / 8.f;
  const size_t n = size_t(a.B * a.Tq * a.NH * a.HS);
  const Case c = [&](Backend& be, Bufs& b) {
    for (uint32_t s = 1; s <= 3; ++s) b.push_back(buf(be, keel::bench::filled(n, 1.f, s)));
    b.push_back(zeros(be, n * 4));
    b.push_back(zeros(be, size_t(a.B * a.NH * a.Tq) * 4));
    return std::function<void()>(
        [&be, a, q = b[0]->p(), k = b[1]->p(), v = b[2]->p(), o = b[3]->p(),
         l = b[4]->as<float>()] { be.attention_forward(a, q, k, v, o, l); });
  };
  // Causal: half of the 4 * T^2 * HS multiply-adds per head.
  const double flop = 2.0 * double(a.B * a.NH) * double(a.Tq * a.Tk) * double(a.HS);
  line(vk, "attention_fwd_f32", "B2 T128 NH8 HS64 causal", "gflop_s", flop, time_case(vk, cpu, c));
}

void bench_memory(Backend& vk, Backend& cpu) {
  const int64_t n = 8 << 20;
  const auto x = keel::bench::filled(size_t(n), 1.f, 3), y = keel::bench::filled(size_t(n), 1.f, 4);
  const Case add = [&](Backend& be, Bufs& b) {
    b.push_back(buf(be, x));
    b.push_back(buf(be, y));
    b.push_back(zeros(be, size_t(n) * 4));
    return std::function<void()>(
        [&be, n, p = b[0]->p(), q = b[1]->p(), o = b[2]->p()] { be.add(DType::F32, p, q, o, n); });
  };
  line(vk, "add_f32", std::to_string(n), "gb_s", 12.0 * n, time_case(vk, cpu, add));
  const int64_t N = 2048, C = n / N;
  const Case rms = [&](Backend& be, Bufs& b) {
    b.push_back(buf(be, x));
    b.push_back(buf(be, std::vector<float>(size_t(C), 1.f)));
    b.push_back(zeros(be, size_t(n) * 4));
    b.push_back(zeros(be, size_t(N) * 4));
    return std::function<void()>(
        [&be, N, C, p = b[0]->p(), w = b[1]->p(), o = b[2]->p(), r = b[3]->as<float>()] {
          be.rmsnorm_forward(DType::F32, p, w, o, r, N, C, 1e-5f);
        });
  };
  line(vk, "rmsnorm_f32", std::to_string(N) + "x" + std::to_string(C), "gb_s", 8.0 * n,
       time_case(vk, cpu, rms));
  const Case adamw = [&](Backend& be, Bufs& b) {
    for (int i = 0; i < 4; ++i) b.push_back(buf(be, i == 1 ? y : x));
    kb::AdamWArgs a;
    a.n = n;
    a.lr = 1e-3f;
    return std::function<void()>(
        [&be, a, p = b[0]->as<float>(), g = b[1]->as<float>(), m = b[2]->as<float>(),
         v = b[3]->as<float>()] { be.adamw_update(a, p, g, m, v, nullptr); });
  };
  // reads param, grad, m, v; writes param, m, v
  line(vk, "adamw_f32", std::to_string(n), "gb_s", 28.0 * n, time_case(vk, cpu, adamw));
  const int64_t M = 1, QN = 2048, QK = 2048;
  const Case qmm = [&](Backend& be, Bufs& b) {
    auto w = std::make_unique<DevBuf>(be, keel::bench::filled(size_t(QN * QK), 0.1f, 5));
    b.push_back(zeros(be, keel::dtype_bytes(DType::Q8_0, size_t(QN * QK))));
    be.quantize(DType::Q8_0, w->as<float>(), b[0]->p(), nullptr, QN, QK);
    b.push_back(buf(be, keel::bench::filled(size_t(M * QK), 1.f, 6)));
    b.push_back(zeros(be, size_t(M * QN) * 4));
    return std::function<void()>(
        [&be, M, QN, QK, wq = b[0]->p(), xx = b[1]->as<float>(), yy = b[2]->as<float>()] {
          be.qmatmul(DType::Q8_0, xx, wq, nullptr, yy, M, QN, QK);
        });
  };
  // batch-1 decode: the q8_0 weights are the bytes that move
  line(vk, "qmatmul_q8_0_gemv", "1x2048x2048", "gb_s",
       double(keel::dtype_bytes(DType::Q8_0, size_t(QN * QK))), time_case(vk, cpu, qmm));
  const Case ss = [&](Backend& be, Bufs& b) {
    b.push_back(buf(be, x));
    b.push_back(zeros(be, 8));
    return std::function<void()>(
        [&be, n, p = b[0]->p(), o = b[1]->as<double>()] { be.sum_squares(DType::F32, p, n, o); });
  };
  line(vk, "sum_squares_f32", std::to_string(n), "gb_s", 4.0 * n, time_case(vk, cpu, ss));
  // Host <-> device: what a step pays for every byte it moves.
  std::vector<float> back(static_cast<size_t>(n));
  DevBuf d(vk, nullptr, size_t(n) * 4);
  const double up = per_call([&] { vk.upload(d.p(), x.data(), size_t(n) * 4); });
  const double down = per_call([&] { vk.download(back.data(), d.p(), size_t(n) * 4); });
  std::printf(
      "{\"bench\": \"vulkan\", \"kernel\": \"host_transfer\", \"bytes\": %lld, \"upload_gb_s\": "
      "%.2f, \"download_gb_s\": %.2f, \"device\": \"%s\"}\n",
      static_cast<long long>(n * 4), 4.0 * n / up * 1e-9, 4.0 * n / down * 1e-9,
      vk.describe().c_str());
}

}  // namespace

int main() {
  std::unique_ptr<Backend> vk;
  try {
    vk = kb::make_backend("vulkan");
  } catch (const std::exception& e) {
    std::printf("{\"bench\": \"vulkan\", \"skipped\": \"%s\"}\n", e.what());
    return 0;
  }
  try {
    Backend& cpu = keel::bench::cpu();
    bench_matmul(*vk, cpu, 512, DType::F32);
    bench_matmul(*vk, cpu, 512, DType::BF16);
    bench_attention(*vk, cpu);
    bench_memory(*vk, cpu);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_vulkan: %s\n", e.what());
    return 1;
  }
  return 0;
}
