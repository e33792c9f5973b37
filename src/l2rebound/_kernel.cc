// Fused CPU kernel for the training step's hot part: the mean-squared-error loss of a tanh network and its
// gradient, and the network's outputs, in float64 or float32. One call handles a batch of runs (the leading
// axes that vmap gives it), spread over the threads of XLA's CPU thread pool: runs are independent, so each
// is computed exactly as it would be alone, whichever thread takes it.
//
// Why: on a CPU, XLA executes forward and backward pass as separate small matrix products and elementwise
// loops over all N samples, each a pass through memory. Here the samples are taken in blocks of
// BLOCK; a block's activations stay in cache while every layer is evaluated forward and backward, and the
// arithmetic runs on SIMD vectors whose lanes are samples (GCC vector extensions of 64 bytes: 8 doubles or
// 16 floats, which the compiler maps onto the building machine's widest vectors: l2rebound.kernel builds
// with -march=native). A float32 block therefore holds twice the samples of a float64 one in the same
// registers, and each instruction does twice the work. The products are register-tiled (several rows or a
// 4 x 4 tile of the weight gradient per pass), so that each value loaded from memory serves several
// multiply-adds.
//
// Every computation is a template on the floating type T (double or float) and accumulates in T itself, as
// XLA's float32 programs do; only tanh has a version per type (its constants and table are the type's).
// The float64 arithmetic and its order are fixed: the store reuses float64 results by their config's hash,
// so any change to a float64 bit would silently mix old and new numbers.
//
// Layout (as l2rebound.nets): θ = W1, b1, W2, b2, ... with W_l (d_l, d_{l-1}) row-major; hidden layers
// h = tanh(W h + b), linear output; x (n, d0) and y (n, dL) row-major. The loss is the *sum* over samples
// and outputs of (f(x) - y)^2 and the gradient is that of the sum; the caller divides by n·dL.
//
// It also computes the genericity check of the jitter projection (l2rebound.genericity.violations), which
// the default training runs after every epoch.
//
// And the Threefry-2x32 hash of jax.random (ThreefryImpl), which compiles faster as a call than as XLA's loop.
//
// Exposed to JAX through the XLA FFI (jax.ffi): l2rebound.kernel compiles this file into a shared library
// at first use, loads it with ctypes and registers the handler symbols (C linkage, see
// XLA_FFI_DEFINE_HANDLER_SYMBOL) LossGrad, Forward, Violations (float64) and LossGradF32, ForwardF32,
// ViolationsF32 (float32) as the targets "l2rebound_loss_grad", "l2rebound_forward", "l2rebound_violations"
// and the same names with "_f32", and Threefry as "l2rebound_threefry2x32". A target per type rather than
// one that looks at its buffers' types: XLA then checks every operand's type before the call.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#define INLINE inline __attribute__((always_inline))

// One SIMD vector of T (64 bytes), the integer vector of the same lane count that its comparisons give, and
// the constants that depend on the type.
template <class T>
struct Simd;

template <>
struct Simd<double> {
  typedef double Vec __attribute__((vector_size(64)));
  typedef int64_t Int __attribute__((vector_size(64)));
  typedef int64_t Lane;  // an element of Int
  static constexpr int LANES = 8;
  static constexpr double SHIFTER = 0x1.8p52;  // adding it rounds |t| < 2^51 to an integer, ties to even
  static INLINE Vec splat(double a) { return Vec{a, a, a, a, a, a, a, a}; }
  static INLINE Int lanes() { return Int{0, 1, 2, 3, 4, 5, 6, 7}; }
};

template <>
struct Simd<float> {
  typedef float Vec __attribute__((vector_size(64)));
  typedef int32_t Int __attribute__((vector_size(64)));
  typedef int32_t Lane;
  static constexpr int LANES = 16;
  static constexpr float SHIFTER = 0x1.8p23f;  // adding it rounds |t| < 2^22 to an integer, ties to even
  static INLINE Vec splat(float a) { return Vec{a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }
  static INLINE Int lanes() { return Int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}; }
};

template <class T>
using Vec = typename Simd<T>::Vec;
template <class T>
using Int = typename Simd<T>::Int;
template <class T>
constexpr int LANES = Simd<T>::LANES;
constexpr int VECS = 8;  // vectors per block row: the register tiling below is written for 8
template <class T>
constexpr int BLOCK = LANES<T> * VECS;  // samples per block: 64 in float64, 128 in float32

// Every lane a (each lane written, so that a is kept bit for bit, -0.0 included).
template <class T>
INLINE Vec<T> splat(T a) {
  return Simd<T>::splat(a);
}

// 2^(j/16) and 2^(j/16) - 1 for j = 0..15, each split into lanes 0-7 and 8-15: the table of vtanh (float64).
struct Exp2Table {
  Vec<double> pow_lo, pow_hi, pm1_lo, pm1_hi;
  Exp2Table() {
    for (int j = 0; j < 16; j++) {
      const long double e = std::expm1l(j * 0.693147180559945309417232121458176568L / 16);
      (j < 8 ? pm1_lo : pm1_hi)[j % 8] = static_cast<double>(e);
      (j < 8 ? pow_lo : pow_hi)[j % 8] = static_cast<double>(1 + e);
    }
  }
};
const Exp2Table kExp2;

// The same table in float32: its 16 entries fill one vector, so a lookup is a one-vector shuffle.
struct Exp2TableF {
  Vec<float> pow, pm1;
  Exp2TableF() {
    for (int j = 0; j < 16; j++) {
      const long double e = std::expm1l(j * 0.693147180559945309417232121458176568L / 16);
      pm1[j] = static_cast<float>(e);
      pow[j] = static_cast<float>(1 + e);
    }
  }
};
const Exp2TableF kExp2F;

// tanh of every lane, within about 3 ulp; NaN stays NaN, ±inf gives ±1.
// tanh(x) = sign(x)·m/(m + 2) with m = expm1(2|x|). With 2|x| = (16e + j)·ln2/16 + r (j = 0..15, |r| <= ln2/32),
// expm1(2|x|) = 2^e·(T_j·expm1(r) + (T_j - 1)) + (2^e - 1), T_j = 2^(j/16) from a table (a two-vector shuffle),
// expm1(r) from its Taylor series to r^7 (truncation below 1e-16 relative). |x| is capped at 20, where tanh
// rounds to 1.
INLINE Vec<double> vtanh(Vec<double> x) {
  typedef Vec<double> v8;
  typedef Int<double> i8;
  const v8 a0 = x < 0 ? -x : x;
  const v8 a = a0 > 20 ? splat(20.0) : a0;
  const v8 shifter = splat(0x1.8p52);                      // adding it rounds to an integer held in the low bits
  const v8 kd = a * (32 / 0.693147180559945309417) + shifter;
  const v8 k = kd - shifter;                                // round(2|x|·16/ln2), at most 923
  const v8 r = ((a + a) - k * 0x1.62e42fefa38p-5) - k * 0x1.ef35793c7673p-49;  // ln2/16 as high (exact for k < 2^11) + low part
  const i8 bits = (i8)kd;
  const v8 t_j = __builtin_shuffle(kExp2.pow_lo, kExp2.pow_hi, bits & 15);
  const v8 tm1_j = __builtin_shuffle(kExp2.pm1_lo, kExp2.pm1_hi, bits & 15);
  const v8 scale = (v8)(((bits >> 4) << 52) + (int64_t{1023} << 52));  // 2^e
  v8 p = splat(1.0 / 5040);
  for (double c : {1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5}) p = p * r + c;
  const v8 em_r = r + (r * r) * p;                          // expm1(r)
  const v8 m = scale * (t_j * em_r + tm1_j) + (scale - 1);
  const v8 t = m / (m + 2);
  return x < 0 ? -t : t;
}

// The float32 tanh, within about 3 ulp of float32, the same way: |x| is capped at 10 (tanh rounds to 1 in
// float32 from 9.1 on), so k <= 462 and k times the 13-bit high part of ln2/16 is exact; expm1(r) from its
// Taylor series to r^4 (truncation below 2e-9 relative, far under float32's 6e-8). The sign is taken and
// put back as a bit (fewer instructions than compare and select, and tanh(-0) = -0).
INLINE Vec<float> vtanh(Vec<float> x) {
  typedef Vec<float> v16;
  typedef Int<float> i16;
  const i16 sign = (i16)x & INT32_MIN;
  const v16 a0 = (v16)((i16)x ^ sign);
  const v16 a = a0 > 10 ? splat(10.0f) : a0;
  const v16 shifter = splat(Simd<float>::SHIFTER);
  const v16 kd = a * (32 / 0.693147180559945309417f) + shifter;
  const v16 k = kd - shifter;                               // round(2|x|·16/ln2), at most 462
  const v16 r = ((a + a) - k * 0x1.62ep-5f) - k * 0x1.0bfbe8p-19f;  // ln2/16 as high (13 bits) + low part
  const i16 bits = (i16)kd;
  const v16 t_j = __builtin_shuffle(kExp2F.pow, bits & 15);
  const v16 tm1_j = __builtin_shuffle(kExp2F.pm1, bits & 15);
  const v16 scale = (v16)(((bits >> 4) << 23) + (int32_t{127} << 23));  // 2^e
  v16 p = splat(1.0f / 24);
  for (float c : {1.0f / 6, 0.5f}) p = p * r + c;
  const v16 em_r = r + (r * r) * p;                         // expm1(r)
  const v16 m = scale * (t_j * em_r + tm1_j) + (scale - 1);
  const v16 t = m / (m + 2);
  return (v16)((i16)t | sign);
}

// Per-call layout of a network and scratch space for one block.
struct Net {
  std::vector<int64_t> dims, offset;  // offset[l]: start of W_l in θ
  int64_t params = 0, width = 0;
  explicit Net(ffi::Span<const int64_t> d) : dims(d.begin(), d.end()) {
    for (size_t l = 0; l + 1 < dims.size(); l++) {
      offset.push_back(params);
      params += dims[l + 1] * (dims[l] + 1);
    }
    width = *std::max_element(dims.begin(), dims.end());
  }
  int layers() const { return static_cast<int>(dims.size()) - 1; }
};

template <class T>
struct Scratch {
  std::vector<std::vector<Vec<T>>> act;  // act[l]: (d_l, VECS) activations of the block
  std::vector<Vec<T>> delta, prev, grad;  // back-propagated errors (width, VECS) and lane-wise gradient sums (P)
  explicit Scratch(const Net& net) : delta(net.width * VECS), prev(net.width * VECS), grad(net.params) {
    for (int64_t d : net.dims) act.emplace_back(d * VECS);
  }
};

// Rows [first, first + R) of a matrix product over one block: acc[r] = start(row) + sum_k m[row, k] * in[k] for
// k < count, where m[row, k] = m[row * row_stride + k * k_stride], then finish(row, acc[r]) with the row's
// VECS vectors. R rows at once, so that every vector loaded serves R multiply-adds (R = 3: 24 accumulators
// in AVX-512's 32 vector registers).
template <int R, class T, class Start, class Finish>
INLINE void product_rows(const T* m, int64_t row_stride, int64_t k_stride, int64_t count, int64_t first,
                         const Vec<T>* in, Start start, Finish finish) {
  Vec<T> acc[R][VECS];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < VECS; v++) acc[r][v] = start(first + r);
  for (int64_t k = 0; k < count; k++) {
    Vec<T> mr[R];
    for (int r = 0; r < R; r++) mr[r] = splat(m[(first + r) * row_stride + k * k_stride]);
    for (int v = 0; v < VECS; v++) {
      const Vec<T> h = in[k * VECS + v];
      for (int r = 0; r < R; r++) acc[r][v] += mr[r] * h;
    }
  }
  for (int r = 0; r < R; r++) finish(first + r, acc[r]);
}

// Every row [0, rows) of that product, three at a time.
template <class T, class Start, class Finish>
INLINE void product(const T* m, int64_t row_stride, int64_t k_stride, int64_t count, int64_t rows, const Vec<T>* in,
                    Start start, Finish finish) {
  int64_t i = 0;
  for (; i + 3 <= rows; i += 3) product_rows<3>(m, row_stride, k_stride, count, i, in, start, finish);
  switch (rows - i) {
    case 2: product_rows<2>(m, row_stride, k_stride, count, i, in, start, finish); break;
    case 1: product_rows<1>(m, row_stride, k_stride, count, i, in, start, finish); break;
  }
}

// Lane-wise weight-gradient sums of an A x B tile (delta, in, gw offset to the tile's corner):
// gw[a, b] += sum over the block's vectors of delta[a] * in[b].
template <int A, int B, class T>
INLINE void outer_tile(const Vec<T>* delta, const Vec<T>* in, Vec<T>* gw, int64_t d_in) {
  Vec<T> acc[A][B];
  for (int a = 0; a < A; a++)
    for (int c = 0; c < B; c++) acc[a][c] = splat<T>(0);
  for (int v = 0; v < VECS; v++) {
    Vec<T> d[A], h[B];
    for (int a = 0; a < A; a++) d[a] = delta[a * VECS + v];
    for (int c = 0; c < B; c++) h[c] = in[c * VECS + v];
    for (int a = 0; a < A; a++)
      for (int c = 0; c < B; c++) acc[a][c] += d[a] * h[c];
  }
  for (int a = 0; a < A; a++)
    for (int c = 0; c < B; c++) gw[a * d_in + c] += acc[a][c];
}

template <int A, class T>
INLINE void outer_rows(const Vec<T>* delta, const Vec<T>* in, Vec<T>* gw, int64_t d_in) {
  int64_t j = 0;
  for (; j + 4 <= d_in; j += 4) outer_tile<A, 4, T>(delta, in + j * VECS, gw + j, d_in);
  switch (d_in - j) {
    case 3: outer_tile<A, 3, T>(delta, in + j * VECS, gw + j, d_in); break;
    case 2: outer_tile<A, 2, T>(delta, in + j * VECS, gw + j, d_in); break;
    case 1: outer_tile<A, 1, T>(delta, in + j * VECS, gw + j, d_in); break;
  }
}

// Load samples [start, start + BLOCK) of x (n, d0) into act[0], zero past n; then every layer forward.
template <class T>
void block_forward(const Net& net, const T* theta, int64_t n, const T* x, int64_t start, Scratch<T>& s) {
  const int64_t d0 = net.dims[0];
  Vec<T>* in0 = s.act[0].data();
  for (int64_t j = 0; j < d0; j++)
    for (int v = 0; v < VECS; v++)
      for (int t = 0; t < LANES<T>; t++) {
        const int64_t i = start + v * LANES<T> + t;
        in0[j * VECS + v][t] = i < n ? x[i * d0 + j] : T(0);
      }
  for (int l = 0; l < net.layers(); l++) {
    const int64_t d_in = net.dims[l], d_out = net.dims[l + 1];
    const T* w = theta + net.offset[l];
    const T* b = w + d_out * d_in;
    const Vec<T>* in = s.act[l].data();
    Vec<T>* out = s.act[l + 1].data();
    const bool hidden = l + 1 < net.layers();
    product(w, d_in, 1, d_in, d_out, in, [&](int64_t i) { return splat(b[i]); }, [&](int64_t i, const Vec<T>* acc) {
      for (int v = 0; v < VECS; v++) out[i * VECS + v] = hidden ? vtanh(acc[v]) : acc[v];
    });
  }
}

// Sum of squared residuals over n samples and its gradient (P,), for one run.
template <class T>
void loss_grad_run(const Net& net, const T* theta, int64_t n, const T* x, const T* y, T* loss, T* grad,
                   Scratch<T>& s) {
  const int L = net.layers();
  const int64_t dL = net.dims[L];
  std::fill(s.grad.begin(), s.grad.end(), splat<T>(0));
  Vec<T> total = splat<T>(0);
  for (int64_t start = 0; start < n; start += BLOCK<T>) {
    block_forward(net, theta, n, x, start, s);
    Vec<T>* delta = s.delta.data();
    Vec<T>* prev = s.prev.data();
    const Vec<T>* out = s.act[L].data();
    for (int64_t k = 0; k < dL; k++)
      for (int v = 0; v < VECS; v++) {
        Vec<T> r;
        for (int t = 0; t < LANES<T>; t++) {
          const int64_t i = start + v * LANES<T> + t;
          r[t] = i < n ? out[k * VECS + v][t] - y[i * dL + k] : T(0);  // padding samples contribute nothing
        }
        delta[k * VECS + v] = r;
        total += r * r;
      }
    for (int l = L - 1; l >= 0; l--) {
      const int64_t d_in = net.dims[l], d_out = net.dims[l + 1];
      const T* w = theta + net.offset[l];
      Vec<T>* gw = s.grad.data() + net.offset[l];
      Vec<T>* gb = gw + d_out * d_in;
      const Vec<T>* in = s.act[l].data();
      for (int64_t i = 0; i < d_out; i++) {
        Vec<T> sum = splat<T>(0);
        for (int v = 0; v < VECS; v++) sum += delta[i * VECS + v];
        gb[i] += sum;
      }
      int64_t i = 0;
      for (; i + 4 <= d_out; i += 4) outer_rows<4, T>(delta + i * VECS, in, gw + i * d_in, d_in);
      switch (d_out - i) {
        case 3: outer_rows<3, T>(delta + i * VECS, in, gw + i * d_in, d_in); break;
        case 2: outer_rows<2, T>(delta + i * VECS, in, gw + i * d_in, d_in); break;
        case 1: outer_rows<1, T>(delta + i * VECS, in, gw + i * d_in, d_in); break;
      }
      if (l == 0) break;
      // delta of layer l-1: (W^T delta) * tanh', the rows of W^T being the columns of W
      product(w, 1, d_in, d_out, d_in, delta, [](int64_t) { return splat<T>(0); },
              [&](int64_t j, const Vec<T>* acc) {
                for (int v = 0; v < VECS; v++) {
                  const Vec<T> h = in[j * VECS + v];
                  prev[j * VECS + v] = acc[v] * (1 - h * h);
                }
              });
      std::swap(delta, prev);
    }
  }
  for (int64_t p = 0; p < net.params; p++) {
    T sum = 0;
    for (int t = 0; t < LANES<T>; t++) sum += s.grad[p][t];
    grad[p] = 2 * sum;
  }
  T sum = 0;
  for (int t = 0; t < LANES<T>; t++) sum += total[t];
  *loss = sum;
}

// Outputs (n, dL) for one run.
template <class T>
void forward_run(const Net& net, const T* theta, int64_t n, const T* x, T* out, Scratch<T>& s) {
  const int L = net.layers();
  const int64_t dL = net.dims[L];
  for (int64_t start = 0; start < n; start += BLOCK<T>) {
    block_forward(net, theta, n, x, start, s);
    const Vec<T>* o = s.act[L].data();
    for (int64_t k = 0; k < dL; k++)
      for (int64_t i = start; i < std::min(n, start + BLOCK<T>); i++)
        out[i * dL + k] = o[k * VECS + (i - start) / LANES<T>][(i - start) % LANES<T>];
  }
}

// Mask (P,) of the entries of θ that violate C1-C3 for one run: l2rebound.genericity.violations, the same
// rule and tolerance (see there), as plain IEEE arithmetic in T (no contraction into fused multiply-adds). XLA
// turns that function's ratio division into a reciprocal multiply, so for a ratio within a few ulps of
// the tolerance's edge the two can disagree; exact coincidences are flagged by both.
constexpr int64_t RATIO_BOUND = 10;  // genericity.RATIO_BOUND: a constant, so that the loop over q unrolls
constexpr int64_t PAIRS_UP_TO = 64;  // columns of at most this many rows compare every pair (no sorting)
template <class T>  // relative gap of two keys q·|w_j|, p·|w_i| whose rows can coincide (rtol is 4 epsilons)
constexpr T KEY_SLACK = 16 * std::numeric_limits<T>::epsilon();
constexpr int64_t WINDOW_CAP = 32;  // more keys than this within KEY_SLACK of one: compare every pair instead

// C3 for column k by comparing row j with every earlier row i: O(d_out² RATIO_BOUND). `column` holds |w_ik|
// over rows i, zero-padded to whole vectors (a zero is never compared).
template <class T>
__attribute__((optimize("fp-contract=off"))) void ratio_pairs(const std::vector<Vec<T>>& column, int64_t d_out,
                                                               T rtol, bool* mask_w, int64_t d_in, int64_t k) {
  typedef typename Simd<T>::Lane Lane;
  constexpr int lanes = LANES<T>;
  for (int64_t j = 1; j < d_out; j++) {
    const T aj = column[j / lanes][j % lanes];
    if (aj == 0) continue;
    Int<T> hit = {};
    for (int64_t c = 0; c * lanes < j; c++) {
      const Vec<T> ai = column[c];
      const Int<T> row = Simd<T>::lanes() + static_cast<Lane>(c * lanes);
      const Vec<T> ratio = aj / (ai > 0 ? ai : splat<T>(1));
      for (int64_t q = 1; q <= RATIO_BOUND; q++) {
        const Vec<T> t = ratio * static_cast<T>(q);
        const Vec<T> p = (t + Simd<T>::SHIFTER) - Simd<T>::SHIFTER;  // t rounded to the nearest integer
        const Vec<T> gap = t - p;
        hit |= (p >= 1) & (p <= RATIO_BOUND) & ((gap < 0 ? -gap : gap) <= rtol * t) & (ai > 0) &
               (row < static_cast<Lane>(j));
      }
    }
    for (int t = 0; t < lanes; t++)
      if (hit[t]) mask_w[j * d_in + k] = true;
  }
}

template <class T>
struct Key {
  T key;        // m·|w_xk|
  int64_t row;  // x
  int64_t m;    // 1..RATIO_BOUND
};

// C3 for column k, deciding exactly as ratio_pairs in O(n log n) for n rows: |w_jk / w_ik|·q is within rtol of
// an integer p only if the keys q·|w_jk| and p·|w_ik| lie within KEY_SLACK of each other, so the keys m·|w_xk|
// (m = 1..RATIO_BOUND) are sorted and each is tested, with ratio_pairs' own arithmetic, against the few keys
// near it. The |w_xk| are sorted once; each multiple m keeps their order (rounding is monotone), so the
// RATIO_BOUND sorted runs of keys are merged rather than sorted again. Returns false, having decided nothing,
// for a column with more than WINDOW_CAP keys near one (many weights of about one size): those take
// ratio_pairs.
template <class T>
__attribute__((optimize("fp-contract=off"))) bool ratio_sorted(const std::vector<Vec<T>>& column, int64_t d_out,
                                                                T rtol, bool* mask_w, int64_t d_in, int64_t k,
                                                                std::vector<Key<T>>& keys,
                                                                std::vector<Key<T>>& scratch) {
  constexpr int lanes = LANES<T>;
  constexpr T slack = KEY_SLACK<T>;
  const auto before = [](const Key<T>& a, const Key<T>& b) { return a.key < b.key; };
  scratch.clear();
  for (int64_t x = 0; x < d_out; x++) {
    const T a = column[x / lanes][x % lanes];
    if (a > 0 && std::isfinite(a)) scratch.push_back({a, x, 1});
  }
  std::sort(scratch.begin(), scratch.end(), before);
  const size_t run = scratch.size();
  keys.resize(run * RATIO_BOUND);
  for (int64_t m = 1; m <= RATIO_BOUND; m++)
    for (size_t t = 0; t < run; t++)
      keys[(m - 1) * run + t] = {scratch[t].key * static_cast<T>(m), scratch[t].row, m};
  scratch.resize(keys.size());
  for (size_t width = run; width < keys.size(); width *= 2) {  // merge neighbouring sorted runs, pairwise
    for (size_t lo = 0; lo < keys.size(); lo += 2 * width) {
      const size_t mid = std::min(lo + width, keys.size()), end = std::min(lo + 2 * width, keys.size());
      std::merge(keys.begin() + lo, keys.begin() + mid, keys.begin() + mid, keys.begin() + end,
                 scratch.begin() + lo, before);
    }
    keys.swap(scratch);
  }
  const int64_t n = static_cast<int64_t>(keys.size());
  int64_t lo = 0, hi = 0;
  for (int64_t s = 0; s < n; s++) {
    const Key<T>& e = keys[s];
    while (keys[lo].key < e.key - slack * e.key) lo++;
    while (hi < n && keys[hi].key <= e.key + slack * keys[hi].key) hi++;
    if (hi - lo > WINDOW_CAP) return false;
    const T aj = column[e.row / lanes][e.row % lanes];
    for (int64_t f = lo; f < hi; f++) {
      const Key<T>& g = keys[f];
      if (g.row >= e.row) continue;  // an earlier row only
      const T ai = column[g.row / lanes][g.row % lanes];
      const T t = (aj / ai) * static_cast<T>(e.m);
      const T p = (t + Simd<T>::SHIFTER) - Simd<T>::SHIFTER;
      const T gap = t - p;
      if (p >= 1 && p <= RATIO_BOUND && (gap < 0 ? -gap : gap) <= rtol * t) {
        mask_w[e.row * d_in + k] = true;
        break;
      }
    }
  }
  return true;
}

// C2 for the d biases b of a layer by comparing b_i with every earlier b_j: O(d²).
template <class T>
__attribute__((optimize("fp-contract=off"))) void equal_abs_pairs(const T* b, int64_t d, T rtol, bool* mask_b) {
  for (int64_t i = 0; i < d; i++) {  // |b_i| equals an earlier |b_j|
    const T ai = std::fabs(b[i]);
    for (int64_t j = 0; j < i && ai > 0; j++) {
      const T aj = std::fabs(b[j]);
      if (std::fabs(ai - aj) <= rtol * std::max(ai, aj)) mask_b[i] = true;
    }
  }
}

template <class T>
struct Size {
  T a;        // |b_x|
  int64_t x;
};

// C2 deciding exactly as equal_abs_pairs in O(d log d): the finite |b| > 0 are sorted, and each is tested, with
// equal_abs_pairs' own expression, against the larger ones up to KEY_SLACK above it. That window holds every
// pair the test accepts: for TINY <= x <= y accepted, x >= y/2 (else y - x > y/2 exceeds rtol·y), so y - x is
// exact (Sterbenz) and either below the smallest normal (accepted where subnormal results are flushed to zero,
// as in XLA's threads) or at most fl(rtol·y); both are at most fl(KEY_SLACK·x), KEY_SLACK being >= 2 rtol and
// KEY_SLACK·x >= 2 smallest normals; so y <= fl(x + fl(KEY_SLACK·x)), rounding being monotone. Zeros and
// NaN are never accepted with such an x (NaN compares false; |x - 0| = x > fl(rtol·x)). An infinite |b| is
// accepted with every finite one and no other (inf - inf is NaN), so testing it with the earliest finite |b|,
// and a finite |b| > 0 with the earliest infinite one, decides those. Returns false when a |b| lies in (0,
// TINY) (its gaps may underflow), when more than WINDOW_CAP values lie in one window (many biases of about
// one size: the marks set so far are ones equal_abs_pairs also sets), or when rtol is too large for the
// window: those take equal_abs_pairs.
template <class T>
__attribute__((optimize("fp-contract=off"))) bool equal_abs_sorted(const T* b, int64_t d, T rtol, bool* mask_b,
                                                                    std::vector<Size<T>>& sizes) {
  constexpr T slack = KEY_SLACK<T>;
  constexpr T tiny = 2 * std::numeric_limits<T>::min() / slack;  // TINY
  if (!(2 * rtol <= slack)) return false;
  const auto test = [&](int64_t i, int64_t j) {  // i later than j
    const T ai = std::fabs(b[i]), aj = std::fabs(b[j]);
    if (ai > 0 && std::fabs(ai - aj) <= rtol * std::max(ai, aj)) mask_b[i] = true;
  };
  int64_t first_finite = d, first_inf = d;
  sizes.clear();
  for (int64_t x = 0; x < d; x++) {
    const T a = std::fabs(b[x]);
    if (a > 0 && a < tiny) return false;
    if (std::isfinite(a)) first_finite = std::min(first_finite, x);
    if (std::isinf(a)) first_inf = std::min(first_inf, x);
    if (a > 0 && std::isfinite(a)) sizes.push_back({a, x});
  }
  for (int64_t x = 0; x < d; x++) {
    const T a = std::fabs(b[x]);
    if (std::isinf(a) && first_finite < x) test(x, first_finite);
    if (a > 0 && std::isfinite(a) && first_inf < x) test(x, first_inf);
  }
  std::sort(sizes.begin(), sizes.end(), [](const Size<T>& u, const Size<T>& v) { return u.a < v.a; });
  const int64_t n = static_cast<int64_t>(sizes.size());
  for (int64_t s = 0; s < n; s++) {
    const Size<T>& e = sizes[s];
    const T top = e.a + slack * e.a;
    for (int64_t t = s + 1; t < n && sizes[t].a <= top; t++) {
      if (t - s > WINDOW_CAP) return false;
      test(std::max(e.x, sizes[t].x), std::min(e.x, sizes[t].x));
    }
  }
  return true;
}

template <class T>
__attribute__((optimize("fp-contract=off"))) void violations_run(const Net& net, const T* theta, T rtol, bool* mask) {
  constexpr int lanes = LANES<T>;
  std::vector<Key<T>> keys, scratch;
  std::vector<Size<T>> sizes;
  for (int64_t p = 0; p < net.params; p++) mask[p] = theta[p] == 0;  // C1
  for (int l = 0; l < net.layers(); l++) {
    const int64_t d_in = net.dims[l], d_out = net.dims[l + 1];
    const T* w = theta + net.offset[l];
    const T* b = w + d_out * d_in;
    bool* mask_w = mask + net.offset[l];
    bool* mask_b = mask_w + d_out * d_in;
    if (d_out <= PAIRS_UP_TO || !equal_abs_sorted(b, d_out, rtol, mask_b, sizes))  // C2
      equal_abs_pairs(b, d_out, rtol, mask_b);
    const int64_t vecs = (d_out + lanes - 1) / lanes;
    std::vector<Vec<T>> column(vecs, splat<T>(0));  // |w_ik| over rows i, zero-padded (a zero is never compared)
    for (int64_t k = 0; k < d_in; k++) {  // C3: |w_jk / w_ik| = p/q for an earlier row i
      for (int64_t i = 0; i < d_out; i++) column[i / lanes][i % lanes] = std::fabs(w[i * d_in + k]);
      if (d_out <= PAIRS_UP_TO || !ratio_sorted(column, d_out, rtol, mask_w, d_in, k, keys, scratch))
        ratio_pairs(column, d_out, rtol, mask_w, d_in, k);
    }
  }
}

// Runs in a batch: every leading axis of θ (..., P) is a run; x and y hold one (n, d) set per run.
ffi::Error count_runs(const Net& net, ffi::AnyBuffer::Dimensions theta, int64_t& runs) {
  if (net.dims.size() < 2 || theta.size() == 0 || theta.back() != net.params)
    return ffi::Error::InvalidArgument("l2rebound kernel: theta's last axis does not match dims");
  runs = 1;
  for (size_t a = 0; a + 1 < theta.size(); a++) runs *= theta[a];
  return ffi::Error::Success();
}

ffi::Error count_samples(const Net& net, ffi::AnyBuffer::Dimensions theta, size_t x_size, int64_t& runs, int64_t& n) {
  if (ffi::Error e = count_runs(net, theta, runs); e.failure()) return e;
  if (runs == 0 || x_size % (runs * net.dims[0]))
    return ffi::Error::InvalidArgument("l2rebound kernel: x does not hold one (n, d0) set per run");
  n = static_cast<int64_t>(x_size) / (runs * net.dims[0]);
  return ffi::Error::Success();
}

// Calls run(r, local) for every run r in [0, runs), spread over the calling thread and XLA's CPU thread pool:
// each thread takes the next run that no thread has taken yet (rather than a fixed share, which the whole
// call would wait for if the OS held its thread back), and uses one local = make() (its scratch space) for
// all the runs it takes. The locals are made here, before any task starts, so that an allocation failure is
// an error returned to XLA rather than an exception in a pool thread. Returns when all runs are done.
//
// The caller takes runs too and then waits only for runs that other threads have taken, never for a task to
// start: a task that the pool starts late (its threads busy, or this call itself running on one of them)
// finds no run left and touches nothing but the counters, which it co-owns. So the wait cannot deadlock, and
// nothing of the caller's frame is used after the last run is counted done.
template <class Make, class Run>
ffi::Error for_each_run(ffi::ThreadPool& pool, int64_t runs, const Make& make, const Run& run) {
  struct Progress {
    const int64_t runs;
    std::atomic<int64_t> next{0}, done{0};
    std::mutex mutex;
    std::condition_variable all_done;
    explicit Progress(int64_t runs) : runs(runs) {}
  };
  const int64_t helpers = std::min<int64_t>(runs, pool.num_threads() + 1) - 1;
  std::vector<decltype(make())> locals;
  std::shared_ptr<Progress> progress;
  try {
    locals.reserve(helpers + 1);
    for (int64_t t = 0; t <= helpers; t++) locals.push_back(make());
    progress = std::make_shared<Progress>(runs);
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, "l2rebound kernel: no memory for the scratch space");
  }
  // Runs `first` (already taken) and then every further run this thread can take. It reads its closure (the
  // caller's frame) only before counting its runs done.
  const auto work = [&run, &locals](Progress& p, int64_t first, int64_t slot) {
    int64_t mine = 0;
    for (int64_t r = first; r < p.runs; r = p.next.fetch_add(1)) {
      run(r, locals[slot]);
      mine++;
    }
    if (p.done.fetch_add(mine) + mine == p.runs) {
      std::lock_guard<std::mutex> lock(p.mutex);
      p.all_done.notify_all();
    }
  };
  for (int64_t t = 0; t < helpers; t++)
    pool.Schedule([progress, body = &work, t] {
      const int64_t first = progress->next.fetch_add(1);
      if (first < progress->runs) (*body)(*progress, first, t + 1);  // a run not done yet: the caller waits
    });
  if (const int64_t first = progress->next.fetch_add(1); first < runs) work(*progress, first, 0);
  std::unique_lock<std::mutex> lock(progress->mutex);
  progress->all_done.wait(lock, [&] { return progress->done.load() == runs; });
  return ffi::Error::Success();
}


// The FFI element type of T.
template <class T>
constexpr ffi::DataType kType = std::is_same_v<T, double> ? ffi::F64 : ffi::F32;

template <class T>
ffi::Error LossGradImpl(ffi::ThreadPool pool, ffi::Buffer<kType<T>> theta, ffi::Buffer<kType<T>> x,
                        ffi::Buffer<kType<T>> y, ffi::ResultBuffer<kType<T>> loss, ffi::ResultBuffer<kType<T>> grad,
                        ffi::Span<const int64_t> dims) {
  Net net(dims);
  int64_t runs, n;
  if (ffi::Error e = count_samples(net, theta.dimensions(), x.element_count(), runs, n); e.failure()) return e;
  if (y.element_count() != static_cast<size_t>(runs * n * net.dims.back()))
    return ffi::Error::InvalidArgument("l2rebound kernel: y does not hold one (n, dL) set per run");
  return for_each_run(pool, runs, [&] { return Scratch<T>(net); }, [&](int64_t r, Scratch<T>& s) {
    loss_grad_run(net, theta.typed_data() + r * net.params, n, x.typed_data() + r * n * net.dims[0],
                  y.typed_data() + r * n * net.dims.back(), loss->typed_data() + r,
                  grad->typed_data() + r * net.params, s);
  });
}

template <class T>
ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::Buffer<kType<T>> theta, ffi::Buffer<kType<T>> x,
                       ffi::ResultBuffer<kType<T>> out, ffi::Span<const int64_t> dims) {
  Net net(dims);
  int64_t runs, n;
  if (ffi::Error e = count_samples(net, theta.dimensions(), x.element_count(), runs, n); e.failure()) return e;
  if (out->element_count() != static_cast<size_t>(runs * n * net.dims.back()))
    return ffi::Error::InvalidArgument("l2rebound kernel: the output does not hold one (n, dL) set per run");
  return for_each_run(pool, runs, [&] { return Scratch<T>(net); }, [&](int64_t r, Scratch<T>& s) {
    forward_run(net, theta.typed_data() + r * net.params, n, x.typed_data() + r * n * net.dims[0],
                out->typed_data() + r * n * net.dims.back(), s);
  });
}

// rtol arrives as a double attribute; genericity's tolerance (4 epsilons of T) is exact in T.
template <class T>
ffi::Error ViolationsImpl(ffi::ThreadPool pool, ffi::Buffer<kType<T>> theta, ffi::ResultBuffer<ffi::PRED> mask,
                          ffi::Span<const int64_t> dims, double rtol, int64_t ratio_bound) {
  Net net(dims);
  int64_t runs;
  if (ffi::Error e = count_runs(net, theta.dimensions(), runs); e.failure()) return e;
  if (ratio_bound != RATIO_BOUND)
    return ffi::Error::InvalidArgument("l2rebound kernel: compiled for a ratio bound of 10; rebuild it for another");
  return for_each_run(pool, runs, [] { return 0; }, [&](int64_t r, int) {
    violations_run(net, theta.typed_data() + r * net.params, static_cast<T>(rtol), mask->typed_data() + r * net.params);
  });
}

// Threefry-2x32 with 20 rounds (Salmon et al., SC 2011), the hash under jax.random's default generator:
// jax's primitive threefry2x32, elementwise over arrays of one shape. XLA compiles jax's own CPU lowering as
// a loop per call site, which was most of the compile time of a program that draws random numbers.
INLINE uint32_t rotl(uint32_t v, int r) { return (v << r) | (v >> (32 - r)); }

ffi::Error ThreefryImpl(ffi::Buffer<ffi::U32> k1, ffi::Buffer<ffi::U32> k2, ffi::Buffer<ffi::U32> x1,
                        ffi::Buffer<ffi::U32> x2, ffi::ResultBuffer<ffi::U32> y1, ffi::ResultBuffer<ffi::U32> y2) {
  const size_t n = y1->element_count();
  for (size_t size : {k1.element_count(), k2.element_count(), x1.element_count(), x2.element_count(),
                      y2->element_count()})
    if (size != n) return ffi::Error::InvalidArgument("l2rebound threefry: operands of different sizes");
  constexpr int rotations[2][4] = {{13, 15, 26, 6}, {17, 29, 16, 24}};
  const uint32_t *a = k1.typed_data(), *b = k2.typed_data(), *c = x1.typed_data(), *d = x2.typed_data();
  uint32_t *out1 = y1->typed_data(), *out2 = y2->typed_data();
  for (size_t i = 0; i < n; i++) {
    const uint32_t ks[3] = {a[i], b[i], a[i] ^ b[i] ^ 0x1BD11BDAu};
    uint32_t v0 = c[i] + ks[0], v1 = d[i] + ks[1];
    for (int group = 1; group <= 5; group++) {
      for (int r : rotations[(group - 1) % 2]) {
        v0 += v1;
        v1 = rotl(v1, r) ^ v0;
      }
      v0 += ks[group % 3];
      v1 += ks[(group + 1) % 3] + static_cast<uint32_t>(group);
    }
    out1[i] = v0;
    out2[i] = v1;
  }
  return ffi::Error::Success();
}

}  // namespace

// The bindings of the typed targets, one per element type D.
#define VIOLATIONS_BINDING(D)                    \
  ffi::Ffi::Bind()                               \
      .Ctx<ffi::ThreadPool>()                    \
      .Arg<ffi::Buffer<D>>()                     \
      .Ret<ffi::Buffer<ffi::PRED>>()             \
      .Attr<ffi::Span<const int64_t>>("dims")    \
      .Attr<double>("rtol")                      \
      .Attr<int64_t>("ratio_bound")

#define LOSS_GRAD_BINDING(D)                     \
  ffi::Ffi::Bind()                               \
      .Ctx<ffi::ThreadPool>()                    \
      .Arg<ffi::Buffer<D>>()                     \
      .Arg<ffi::Buffer<D>>()                     \
      .Arg<ffi::Buffer<D>>()                     \
      .Ret<ffi::Buffer<D>>()                     \
      .Ret<ffi::Buffer<D>>()                     \
      .Attr<ffi::Span<const int64_t>>("dims")

#define FORWARD_BINDING(D)                       \
  ffi::Ffi::Bind()                               \
      .Ctx<ffi::ThreadPool>()                    \
      .Arg<ffi::Buffer<D>>()                     \
      .Arg<ffi::Buffer<D>>()                     \
      .Ret<ffi::Buffer<D>>()                     \
      .Attr<ffi::Span<const int64_t>>("dims")

XLA_FFI_DEFINE_HANDLER_SYMBOL(Threefry, ThreefryImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::Buffer<ffi::U32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(Violations, ViolationsImpl<double>, VIOLATIONS_BINDING(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ViolationsF32, ViolationsImpl<float>, VIOLATIONS_BINDING(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(LossGrad, LossGradImpl<double>, LOSS_GRAD_BINDING(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(LossGradF32, LossGradImpl<float>, LOSS_GRAD_BINDING(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(Forward, ForwardImpl<double>, FORWARD_BINDING(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ForwardF32, ForwardImpl<float>, FORWARD_BINDING(ffi::F32));
