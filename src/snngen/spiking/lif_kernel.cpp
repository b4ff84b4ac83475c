
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t BLK = 2048;
enum Form { SJ = 0, SJ_NDI = 1, SNN = 2, FSVAE = 3, IFORM = 4 };
enum Sur { ATAN = 0, SIGMOID = 1, RECT = 2, TRI = 3, FAST = 4 };

#ifndef SNNGEN_STREAM
#define SNNGEN_STREAM 1
#endif

// dst[0:n] = src[0:n] with non-temporal (streaming) stores where the CPU has them: an output row
// that is written once and read only much later (the backward) goes to memory without first
// being read into the cache (no read-for-ownership), which halves the write traffic. Call
// store_fence() before the data is read by another thread.
template <typename T>
inline void stream_copy(T* __restrict dst, const T* __restrict src, int64_t n) {
#if SNNGEN_STREAM && (defined(__AVX512F__) || defined(__AVX__))
#if defined(__AVX512F__)
  constexpr int64_t VB = 64;
#else
  constexpr int64_t VB = 32;
#endif
  constexpr int64_t W = VB / static_cast<int64_t>(sizeof(T));
  int64_t i = 0;
  while (i < n && (reinterpret_cast<std::uintptr_t>(dst + i) % VB) != 0) { dst[i] = src[i]; ++i; }
  for (; i + W <= n; i += W) {
    if constexpr (std::is_same_v<T, float>) {
#if defined(__AVX512F__)
      _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
#else
      _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
#endif
    } else {
#if defined(__AVX512F__)
      _mm512_stream_pd(dst + i, _mm512_loadu_pd(src + i));
#else
      _mm256_stream_pd(dst + i, _mm256_loadu_pd(src + i));
#endif
    }
  }
  for (; i < n; ++i) dst[i] = src[i];
#else
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
#endif
}

inline void store_fence() {
#if SNNGEN_STREAM && (defined(__AVX512F__) || defined(__AVX__))
  _mm_sfence();
#endif
}

// Post-reset state v = R(h, s), s in {0, 1}, exactly as the eager ops compute it:
// soft torch.add(h, s, alpha=-thr) = fma(s, -thr, h); hard addcmul(h, h, s, -1) then
// torch.add(v, s, alpha=vr) (only when vr != 0).
template <typename T, bool HARD>
inline T reset(T h, T s, T nthr, T vr, bool vr_nonzero) {
  if constexpr (HARD) {
    T v = std::fma(-h, s, h);
    return vr_nonzero ? std::fma(s, vr, v) : v;
  } else {
    return std::fma(s, nthr, h);
  }
}

template <typename T, int F, bool HARD>
void forward_range(const T* __restrict x, T* __restrict sp_out, T* __restrict h_out,
                   int64_t steps, int64_t N, int64_t begin, int64_t end,
                   T thr, T fthr, T vr, T k, T a1, T kvr) {
  // the state (h_{t-1}, s_{t-1}) of the current block stays in these L1-resident rows; each
  // step updates them in place and streams them to the outputs, which are never read back here
  alignas(64) T hrow[BLK];
  alignas(64) T srow[BLK];
  const bool vr_nonzero = vr != T(0);
  const bool small = std::abs(k) < T(0.5);  // ATen's is_lerp_weight_small
  const T km1 = k - T(1), nthr = -thr;
  for (int64_t n0 = begin; n0 < end; n0 += BLK) {
    const int64_t nb = std::min(BLK, end - n0);
    std::fill(hrow, hrow + nb, vr);  // the state before the first step: h = vr, s = 0
    std::fill(srow, srow + nb, T(0));
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t off = t * N + n0;
      const T* __restrict xr = x + off;
#pragma GCC ivdep
      for (int64_t i = 0; i < nb; ++i) {
        const T xi = xr[i];
        T hn;
        if constexpr (F == SNN) {  // u = x + k h_{t-1}, then the reset
          hn = reset<T, HARD>(std::fma(hrow[i], k, xi), srow[i], nthr, vr, vr_nonzero);
        } else {
          const T v = reset<T, HARD>(hrow[i], srow[i], nthr, vr, vr_nonzero);
          if constexpr (F == SJ) {  // torch.lerp(v, x (+ vr), k)
            const T e = vr_nonzero ? xi + vr : xi;
            hn = small ? std::fma(k, e - v, v) : std::fma(km1, e - v, e);
          } else if constexpr (F == SJ_NDI) {  // x + (1 - k) v (+ k vr)
            hn = std::fma(v, a1, xi);
            if (vr_nonzero) hn = hn + kvr;
          } else if constexpr (F == FSVAE) {
            hn = std::fma(v, k, xi);
          } else {
            hn = xi + v;
          }
        }
        hrow[i] = hn;
        srow[i] = hn >= fthr ? T(1) : T(0);
      }
      stream_copy(h_out + off, hrow, nb);
      stream_copy(sp_out + off, srow, nb);
    }
  }
  store_fence();
}

// The surrogate derivatives g(h) = surrogate'(h - thr), the formulas of
// snngen/spiking/surrogate.py (``grad``), one type per surrogate so that the backward's loop
// computes them inline (a separate pass over the block cost ~25% of the backward). ``prepare``
// fills the block's row first where the formula would keep the loop from vectorising (the
// float64 sigmoid's exp; float32 has exp_vectorisable); ``at(h, sg, i)`` is g(h[i]).
template <typename T, int S>
struct SurGrad;

// what every surrogate type shares: its code, the threshold, its parameters (p0, p1), and no
// preparation pass
template <typename T, int S>
struct SurBase {
  static constexpr int kind = S;
  T thr, p0, p1;
  SurBase(T thr_, T p0_, T p1_) : thr(thr_), p0(p0_), p1(p1_) {}
  void prepare(const T*, T*, int64_t) const {}
};

template <typename T>
struct SurGrad<T, ATAN> : SurBase<T, ATAN> {  // alpha/2 / (1 + (pi/2 alpha x)^2); p0 = alpha
  using SurBase<T, ATAN>::SurBase;
  T at(const T* __restrict h, const T*, int64_t i) const {
    const T z = (T(M_PI / 2) * this->p0) * (h[i] - this->thr);
    return (this->p0 / T(2)) / (T(1) + z * z);
  }
};

template <typename T>
struct SurGrad<T, SIGMOID> : SurBase<T, SIGMOID> {  // alpha s (1 - s), s = sigmoid(alpha x)
  using SurBase<T, SIGMOID>::SurBase;
  void prepare(const T* __restrict h, T* __restrict sg, int64_t nb) const {
    for (int64_t i = 0; i < nb; ++i) {
      const T s = T(1) / (T(1) + std::exp(-(this->p0 * (h[i] - this->thr))));
      sg[i] = this->p0 * s * (T(1) - s);
    }
  }
  T at(const T*, const T* __restrict sg, int64_t i) const { return sg[i]; }
};

// e^x for float32, written so that gcc vectorises it inside a loop (std::exp is a scalar
// libm call): Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Cephes' expf polynomial for e^r
// (~1 ulp), 2^n built in the exponent bits. x is clamped to [-87.3, 88.3], where e^x stays a
// normal float (the sigmoid's derivative there is below 1e-37 either way).
inline float exp_vectorisable(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  const float n = std::floor(std::fma(x, 1.44269504088896341f, 0.5f));
  float r = std::fma(n, -0.693359375f, x);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r * r, r) + 1.0f;
  const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

template <>
struct SurGrad<float, SIGMOID> : SurBase<float, SIGMOID> {  // float32: inline, own exp
  using SurBase<float, SIGMOID>::SurBase;
  float at(const float* __restrict h, const float*, int64_t i) const {
    const float s = 1.0f / (1.0f + exp_vectorisable(-(p0 * (h[i] - thr))));
    return p0 * s * (1.0f - s);
  }
};

template <typename T>
struct SurGrad<T, RECT> : SurBase<T, RECT> {  // 1[|x + p1| < p0/2] / p0 (width, offset)
  using SurBase<T, RECT>::SurBase;
  T at(const T* __restrict h, const T*, int64_t i) const {
    // a 0/1 factor rather than a select: gcc vectorises the fused loop with it
    return static_cast<T>(std::abs((h[i] - this->thr) + this->p1) < this->p0 / T(2)) *
           (T(1) / this->p0);
  }
};

template <typename T>
struct SurGrad<T, TRI> : SurBase<T, TRI> {  // max(0, 1 - |x|/width) / width; p0 = width
  using SurBase<T, TRI>::SurBase;
  T at(const T* __restrict h, const T*, int64_t i) const {
    return std::max(T(1) - std::abs(h[i] - this->thr) / this->p0, T(0)) / this->p0;
  }
};

template <typename T>
struct SurGrad<T, FAST> : SurBase<T, FAST> {  // 1 / (slope |x| + 1)^2; p0 = slope
  using SurBase<T, FAST>::SurBase;
  T at(const T* __restrict h, const T*, int64_t i) const {
    const T q = this->p0 * std::abs(h[i] - this->thr) + T(1);
    return T(1) / (q * q);
  }
};

// BPTT over [begin, end): d_t = dL/dh_t = gh_t + sg_t (gs_t + c_{t+1}) + r_{t+1}, c the gradient
// reaching s_t through step t+1's reset, r the one reaching h_t through step t+1's charge.
// GH: a membrane gradient gh was given (else the term is left out, not read from a zero row).
// Returns sum over elements and steps of dL/dk.
template <typename T, int F, bool HARD, int S, bool GH>
double backward_range(const T* __restrict h, const T* __restrict x, const T* __restrict gs,
                      const T* __restrict gh, T* __restrict gx, int64_t steps, int64_t N,
                      int64_t begin, int64_t end, T thr, T fthr, T vr, T k, T a, T b,
                      const SurGrad<T, S>& sgf, bool detach, bool need_k) {
  alignas(64) T dn[BLK];    // d_{t+1}
  alignas(64) T dun[BLK];   // snntorch, hard reset: dL/du_{t+1} (soft: equal to d_{t+1})
  alignas(64) T sg[BLK];    // the surrogate's row where it is prepared (SurGrad::prepare)
  alignas(64) T kacc[BLK];
  alignas(64) T zero[BLK];
  alignas(64) T gxrow[BLK];  // dL/dx_t of the block, streamed to gx (see stream_copy)
  std::fill(zero, zero + BLK, T(0));
  const T nthr = -thr, one = T(1);
  const bool vr_nonzero = vr != T(0);
  const T cr = detach ? T(0) : one;  // detach_reset: no gradient through the reset's s
  double total = 0.0;
  for (int64_t n0 = begin; n0 < end; n0 += BLK) {
    const int64_t nb = std::min(BLK, end - n0);
    for (int64_t i = 0; i < nb; ++i) { dn[i] = T(0); dun[i] = T(0); kacc[i] = T(0); }
    for (int64_t t = steps - 1; t >= 0; --t) {
      const int64_t off = t * N + n0;
      const bool first = t == 0;
      const T* __restrict hr = h + off;
      const T* __restrict hq = first ? zero : h + off - N;  // h_{t-1} (unused when first)
      const T* __restrict gsr = gs ? gs + off : zero;
      const T* __restrict ghr = GH ? gh + off : zero;
      T* __restrict gxr = gxrow;
      sgf.prepare(hr, sg, nb);
      if constexpr (F == SNN) {
        // x_{t+1} for u_{t+1} = x_{t+1} + k h_t (hard reset; d_{t+1} = 0 at the last step)
        const T* __restrict xn = (HARD && x && t < steps - 1) ? x + off + N : zero;
        // FIRST: t == 0 (h_{-1} = vr); KACC: accumulate dL/dk (reads h_{t-1}). A soft reset
        // without KACC never reads h_{t-1}: du_t = d_t, one load stream fewer.
        auto body = [&](auto first_c, auto kacc_c) {
          constexpr bool FIRST = decltype(first_c)::value;
          constexpr bool KACC = decltype(kacc_c)::value;
          constexpr bool READ_HPREV = !FIRST && (HARD || KACC);
#pragma GCC ivdep
          for (int64_t i = 0; i < nb; ++i) {
            T c;  // dh_{t+1}/ds_t d_{t+1}
            if constexpr (HARD) c = (vr - std::fma(hr[i], k, xn[i])) * dn[i];
            else c = nthr * dn[i];
            const T back = sgf.at(hr, sg, i) * (gsr[i] + cr * c);
            // soft reset: du = d, so d_{t+1} serves as du_{t+1} (one row fewer to keep)
            const T dun_i = HARD ? dun[i] : dn[i];
            const T d = GH ? (ghr[i] + back) + k * dun_i : back + k * dun_i;
            T hprev = vr;
            if constexpr (READ_HPREV) hprev = hq[i];
            T du = d;  // dh_t/du_t = 1 - s_{t-1} (hard)
            if constexpr (HARD && !FIRST) du = hprev < fthr ? d : T(0);
            gxr[i] = du;
            if constexpr (KACC) kacc[i] += du * hprev;  // du_t/dk = h_{t-1}
            dn[i] = d;
            if constexpr (HARD) dun[i] = du;
          }
        };
        auto by_k = [&](auto first_c) {
          if (need_k) body(first_c, std::true_type{});
          else body(first_c, std::false_type{});
        };
        if (first) by_k(std::true_type{});
        else by_k(std::false_type{});
      } else {
#pragma GCC ivdep
        for (int64_t i = 0; i < nb; ++i) {
          const T hi = hr[i];
          T c, r;  // dv_{t+1}/ds_t, dv_{t+1}/dh_t
          if constexpr (HARD) {
            c = vr - hi;
            r = hi >= fthr ? T(0) : one;
          } else {
            c = nthr;
            r = one;
          }
          const T back = sgf.at(hr, sg, i) * (gsr[i] + cr * a * c * dn[i]);
          const T d = GH ? (ghr[i] + back) + a * r * dn[i] : back + a * r * dn[i];
          gxr[i] = b * d;
          dn[i] = d;
        }
        if (need_k && F != IFORM) {  // dh_t/dk from v_t = R(h_{t-1}, s_{t-1}) (v_0 = vr)
          const T* __restrict xr = x ? x + off : zero;
#pragma GCC ivdep
          for (int64_t i = 0; i < nb; ++i) {
            T v = vr;
            if (!first) {
              const T hp = hq[i];
              v = reset<T, HARD>(hp, hp >= fthr ? one : T(0), nthr, vr, vr_nonzero);
            }
            T w;
            if constexpr (F == SJ) w = xr[i] + vr - v;
            else if constexpr (F == SJ_NDI) w = vr - v;
            else w = v;
            kacc[i] += dn[i] * w;
          }
        }
      }
      stream_copy(gx + off, gxrow, nb);
    }
    if (need_k) {
      for (int64_t i = 0; i < nb; ++i) total += static_cast<double>(kacc[i]);
    }
  }
  store_fence();
  return total;
}

// fn(SurGrad<T, S>) for the surrogate code ``sur``
template <typename T, typename Fn>
void with_surrogate(int64_t sur, T thr, T p0, T p1, Fn&& fn) {
  switch (sur) {
    case ATAN: fn(SurGrad<T, ATAN>(thr, p0, p1)); break;
    case SIGMOID: fn(SurGrad<T, SIGMOID>(thr, p0, p1)); break;
    case RECT: fn(SurGrad<T, RECT>(thr, p0, p1)); break;
    case TRI: fn(SurGrad<T, TRI>(thr, p0, p1)); break;
    case FAST: fn(SurGrad<T, FAST>(thr, p0, p1)); break;
    default: TORCH_CHECK(false, "snngen lif: unknown surrogate code ", sur);
  }
}

template <typename Fn>
void with_form(int64_t form, bool hard, Fn&& fn) {
  auto go = [&](auto f) {
    if (hard) fn(f, std::true_type{});
    else fn(f, std::false_type{});
  };
  switch (form) {
    case SJ: go(std::integral_constant<int, SJ>{}); break;
    case SJ_NDI: go(std::integral_constant<int, SJ_NDI>{}); break;
    case SNN: go(std::integral_constant<int, SNN>{}); break;
    case FSVAE: go(std::integral_constant<int, FSVAE>{}); break;
    case IFORM: go(std::integral_constant<int, IFORM>{}); break;
    default: TORCH_CHECK(false, "snngen lif: unknown form code ", form);
  }
}

void check(const at::Tensor& t, const at::Tensor& like, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.sizes() == like.sizes() &&
              t.scalar_type() == like.scalar_type(),
              "snngen lif: ", what, " must be a contiguous CPU tensor shaped and typed like h");
}

int64_t grain(int64_t steps) { return std::max<int64_t>(BLK, 32768 / std::max<int64_t>(steps, 1)); }

// the spike comparison h >= fthr: fthr = thr, or (strict, h > thr) the next T above thr
template <typename T>
T fire_threshold(double thr, bool strict) {
  return strict ? std::nextafter(T(thr), std::numeric_limits<T>::infinity()) : T(thr);
}

}  // namespace

std::vector<at::Tensor> lif_forward(at::Tensor x, int64_t form, bool hard, double thr, double vr,
                                    double k, double a1, double kvr, bool strict) {
  TORCH_CHECK(x.dim() == 2 && x.device().is_cpu() && x.is_contiguous(),
              "snngen lif: x must be a contiguous CPU tensor shaped [T, N]");
  auto spikes = at::empty_like(x);
  auto h = at::empty_like(x);
  const int64_t steps = x.size(0), N = x.size(1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_forward", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    T* sp = spikes.data_ptr<T>();
    T* hp = h.data_ptr<T>();
    with_form(form, hard, [&](auto f, auto hd) {
      at::parallel_for(0, N, grain(steps), [&](int64_t b0, int64_t b1) {
        forward_range<T, decltype(f)::value, decltype(hd)::value>(
            xp, sp, hp, steps, N, b0, b1, T(thr), fire_threshold<T>(thr, strict), T(vr), T(k),
            T(a1), T(kvr));
      });
    });
  });
  return {spikes, h};
}

std::vector<at::Tensor> lif_backward(at::Tensor h, c10::optional<at::Tensor> x,
                                     c10::optional<at::Tensor> grad_s,
                                     c10::optional<at::Tensor> grad_h, int64_t form, bool hard,
                                     bool detach, double thr, double vr, double k, double a,
                                     double b, int64_t sur, double p0, double p1, bool need_k,
                                     bool strict) {
  TORCH_CHECK(h.dim() == 2 && h.device().is_cpu() && h.is_contiguous(),
              "snngen lif: h must be a contiguous CPU tensor shaped [T, N]");
  const bool has_x = x.has_value() && x->defined();
  const bool has_gs = grad_s.has_value() && grad_s->defined();
  const bool has_gh = grad_h.has_value() && grad_h->defined();
  if (has_x) check(*x, h, "x");
  if (has_gs) check(*grad_s, h, "grad_s");
  if (has_gh) check(*grad_h, h, "grad_h");
  TORCH_CHECK(has_x || !((form == SNN && hard && !detach) || (form == SJ && need_k)),
              "snngen lif: this backward needs the saved input x");
  auto gx = at::empty_like(h);
  const int64_t steps = h.size(0), N = h.size(1);
  double gk = 0.0;
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "lif_backward", [&] {
    using T = scalar_t;
    const T* hp = h.data_ptr<T>();
    const T* xp = has_x ? x->data_ptr<T>() : nullptr;
    const T* gsp = has_gs ? grad_s->data_ptr<T>() : nullptr;
    const T* ghp = has_gh ? grad_h->data_ptr<T>() : nullptr;
    T* gxp = gx.data_ptr<T>();
    with_form(form, hard, [&](auto f, auto hd) {
      with_surrogate<T>(sur, T(thr), T(p0), T(p1), [&](const auto& sgf) {
        constexpr int S = std::decay_t<decltype(sgf)>::kind;
        auto run = [&](auto gh_c) {
          gk = at::parallel_reduce(0, N, grain(steps), 0.0,
              [&](int64_t b0, int64_t b1, double acc) {
                return acc + backward_range<T, decltype(f)::value, decltype(hd)::value, S,
                                            decltype(gh_c)::value>(
                    hp, xp, gsp, ghp, gxp, steps, N, b0, b1, T(thr),
                    fire_threshold<T>(thr, strict), T(vr), T(k), T(a), T(b), sgf, detach,
                    need_k);
              },
              std::plus<double>());
        };
        if (has_gh) run(std::true_type{});
        else run(std::false_type{});
      });
    });
  });
  return {gx, at::scalar_tensor(gk, at::kDouble)};
}
