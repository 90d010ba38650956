#include "dist/replica_state.h"

#include <cstring>

#include <fmt/format.h>

#include "core/error.h"

namespace keel::dist {

std::vector<std::vector<float>> gather_rank_vectors(Communicator& comm,
                                                    std::span<const float> mine) {
  const size_t n = mine.size(), N = size_t(comm.size());
  std::vector<float> flat(n * N);
  comm.allgather(std::as_bytes(mine), std::as_writable_bytes(std::span<float>(flat)));
  std::vector<std::vector<float>> all(N);
  for (size_t r = 0; r < N; ++r)
    all[r].assign(flat.begin() + std::ptrdiff_t(r * n), flat.begin() + std::ptrdiff_t((r + 1) * n));
  return all;
}

void add_rank_tensors(const std::string& prefix, const std::vector<std::vector<float>>& all,
                      std::vector<io::NamedTensor>& out, size_t first_rank) {
  for (size_t r = first_rank; r < all.size(); ++r)
    out.push_back({fmt::format("{}.rank{}", prefix, r),
                   Tensor::from_f32(all[r], Shape{int64_t(all[r].size())})});
}

bool load_rank_tensor(const io::SafetensorsFile* f, const std::string& prefix, int rank,
                      std::span<float> dst) {
  const std::string name = fmt::format("{}.rank{}", prefix, rank);
  if (!f || !f->contains(name)) return false;
  const Tensor t = f->get(name);
  if (t.dtype() != DType::F32 || t.numel() != int64_t(dst.size()))
    fail<IoError>("{}: tensor '{}' has {} {} elements, expected {} f32", f->path(), name, t.numel(),
                  dtype_name(t.dtype()), dst.size());
  std::memcpy(dst.data(), t.raw(), dst.size() * sizeof(float));
  return true;
}

}  // namespace keel::dist
