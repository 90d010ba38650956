// Shape: the extents of a tensor (row-major, up to 8 dims), with helpers to
// count elements and print shapes inside error messages.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace keel {

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> d) : dims_(d) {}
  explicit Shape(std::vector<int64_t> d) : dims_(std::move(d)) {}

  int rank() const { return int(dims_.size()); }
  int64_t operator[](int i) const { return dims_[i < 0 ? i + rank() : i]; }
  int64_t& operator[](int i) { return dims_[i < 0 ? i + rank() : i]; }
  int64_t numel() const;
  const std::vector<int64_t>& dims() const { return dims_; }
  bool operator==(const Shape& o) const { return dims_ == o.dims_; }
  bool operator!=(const Shape& o) const { return dims_ != o.dims_; }
  // "[2, 3, 4]"
  std::string str() const;
  // Row-major strides in elements.
  std::vector<int64_t> contiguous_strides() const;

 private:
  std::vector<int64_t> dims_;
};

}  // namespace keel
