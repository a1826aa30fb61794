// The entity stream's CPU kernels: ERNIE-KG's entity self-attention core, the entity
// stream's residual + dropout + LayerNorm, and the knowledge gate with the fused rows of
// the information fusion, each one call forward and one autograd node backward.
//
// Why native code: on a CPU each of these steps is several small ATen ops run between the
// token stream's large products, and each op first pays to bring its code and data back
// into the caches (tens of microseconds on an Intel Xeon, whatever its size). One loop
// over the entities pays that once. The matrix products stay ATen's.
// ernie_kg/modeling/native.py builds this file on first use and says when it is used.

#include <torch/extension.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

namespace {

// Lets the compiler vectorize a sum by reordering its additions (a loop-carried sum is
// otherwise one add after another); a macro because AT_DISPATCH's lambdas take no #pragma.
#define ENTITY_STRINGIFY(...) #__VA_ARGS__
#define ENTITY_SIMD_SUM(...) _Pragma(ENTITY_STRINGIFY(omp simd reduction(+ : __VA_ARGS__)))

// Row offsets of the sequences' entity groups (rows with equal batch index are
// consecutive), with the row count appended.
std::vector<int64_t> group_starts(const Tensor& batch_index) {
  const Tensor index = batch_index.to(torch::kLong).contiguous();
  const int64_t* p = index.data_ptr<int64_t>();
  const int64_t n = index.numel();
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < n; ++i) {
    if (i == 0 || p[i] != p[i - 1]) starts.push_back(i);
  }
  starts.push_back(n);
  return starts;
}

// Loops split across torch's threads only beyond this many elements (4x ATen's grain):
// a small batch runs inline, without waking a thread; a large one on many cores does not
// wait on one.
constexpr int64_t kParallelElements = 4 * 32768;

// body(begin, end) over rows [0, n) of `width` elements each, in parallel chunks if large.
template <typename Body>
void for_rows(int64_t n, int64_t width, const Body& body) {
  const int64_t grain = std::max<int64_t>(1, kParallelElements / std::max<int64_t>(width, 1));
  at::parallel_for(0, n, grain, body);
}

// rows[k] = grid[index[k]] for n rows of a [T, width] grid (index_select without an op).
template <typename scalar_t>
void gather_rows(scalar_t* rows, const scalar_t* grid, const int64_t* index, int64_t n,
                 int64_t width) {
  for_rows(n, width, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      std::memcpy(rows + k * width, grid + index[k] * width, width * sizeof(scalar_t));
    }
  });
}

// The backward passes are loops, not recorded ops: a graph of them cannot be differentiated.
void refuse_double_backward() {
  TORCH_CHECK(!at::GradMode::is_enabled(),
              "the entity stream's native kernels have no second derivative; run the "
              "double backward inside ernie_kg.modeling.native.entity_kernels_off()");
}

// The keep factors of a dropout: 0 with probability p, 1 / (1 - p) otherwise.
Tensor draw_keep(int64_t count, double p, const std::optional<at::Generator>& generator,
                 const Tensor& like) {
  Tensor keep = at::empty({count}, like.options());
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  const uint64_t cut = static_cast<uint64_t>(p * 4294967296.0);
  AT_DISPATCH_FLOATING_TYPES(like.scalar_type(), "entity_dropout", [&] {
    const scalar_t scale = static_cast<scalar_t>(1.0 / (1.0 - p));
    scalar_t* out = keep.data_ptr<scalar_t>();
    for (int64_t i = 0; i < count; ++i) {
      out[i] = gen->random() < cut ? scalar_t(0) : scale;
    }
  });
  return keep;
}

// ---------------------------------------------------------------- attention core
// qkv [N, 3 * dim] (query, key, value, heads of head_dim each) -> context [N, dim]:
// softmax(q k^T / sqrt(head_dim)) v within each sequence's entities. probs (when not
// null) keeps each group's [heads, m, m] probabilities; keep (when not null) the dropout
// factors applied to them.

// Calls visit(first row s, group size m, head h, query i, offset of its m probabilities,
// a scratch row of m) for every head of every entity: the index space of both passes.
// Groups (sequences) are independent, so large batches split them across threads.
template <typename scalar_t, typename Visit>
void for_each_query(const std::vector<int64_t>& starts, int64_t heads, int64_t head_dim,
                    const Visit& visit) {
  const int64_t groups = static_cast<int64_t>(starts.size()) - 1;
  std::vector<int64_t> offsets(groups + 1, 0);
  int64_t work = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t m = starts[g + 1] - starts[g];
    offsets[g + 1] = offsets[g] + heads * m * m;
    work += heads * m * m * head_dim;
  }
  for_rows(groups, std::max<int64_t>(1, work / std::max<int64_t>(groups, 1)),
           [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch;
    for (int64_t g = begin; g < end; ++g) {
      const int64_t s = starts[g], m = starts[g + 1] - starts[g];
      scratch.resize(m);
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t i = 0; i < m; ++i) {
          visit(s, m, h, i, offsets[g] + (h * m + i) * m, scratch.data());
        }
      }
    }
  });
}

template <typename scalar_t>
void attention_forward(const scalar_t* qkv, scalar_t* out, scalar_t* probs, const scalar_t* keep,
                       const std::vector<int64_t>& starts, int64_t heads, int64_t dim) {
  const int64_t head_dim = dim / heads;
  const scalar_t scale = scalar_t(1) / std::sqrt(static_cast<scalar_t>(head_dim));
  for_each_query<scalar_t>(starts, heads, head_dim, [&](int64_t s, int64_t m, int64_t h,
                                                      int64_t i, int64_t at, scalar_t* row) {
    scalar_t* p = probs ? probs + at : row;
    const scalar_t* q = qkv + (s + i) * 3 * dim + h * head_dim;
    scalar_t top = -INFINITY;
    for (int64_t j = 0; j < m; ++j) {
      const scalar_t* k = qkv + (s + j) * 3 * dim + dim + h * head_dim;
      scalar_t dot = 0;
      ENTITY_SIMD_SUM(dot)
      for (int64_t t = 0; t < head_dim; ++t) dot += q[t] * k[t];
      p[j] = dot * scale;
      top = std::max(top, p[j]);
    }
    scalar_t sum = 0;
    for (int64_t j = 0; j < m; ++j) {
      p[j] = std::exp(p[j] - top);
      sum += p[j];
    }
    scalar_t* o = out + (s + i) * dim + h * head_dim;
    std::fill(o, o + head_dim, scalar_t(0));
    for (int64_t j = 0; j < m; ++j) {
      p[j] /= sum;
      const scalar_t w = keep ? p[j] * keep[at + j] : p[j];
      const scalar_t* v = qkv + (s + j) * 3 * dim + 2 * dim + h * head_dim;
      for (int64_t t = 0; t < head_dim; ++t) o[t] += w * v[t];
    }
  });
}

template <typename scalar_t>
void attention_backward(const scalar_t* qkv, const scalar_t* probs, const scalar_t* keep,
                        const scalar_t* grad_out, scalar_t* grad_qkv,
                        const std::vector<int64_t>& starts, int64_t heads, int64_t dim) {
  const int64_t head_dim = dim / heads;
  const scalar_t scale = scalar_t(1) / std::sqrt(static_cast<scalar_t>(head_dim));
  for_each_query<scalar_t>(starts, heads, head_dim, [&](int64_t s, int64_t m, int64_t h,
                                                      int64_t i, int64_t at,
                                                      scalar_t* grad_probs) {
    const scalar_t* p = probs + at;
    const scalar_t* go = grad_out + (s + i) * dim + h * head_dim;
    scalar_t weighted = 0;  // sum_j dP_ij P_ij
    for (int64_t j = 0; j < m; ++j) {
      const scalar_t factor = keep ? keep[at + j] : scalar_t(1);
      const scalar_t* v = qkv + (s + j) * 3 * dim + 2 * dim + h * head_dim;
      scalar_t* gv = grad_qkv + (s + j) * 3 * dim + 2 * dim + h * head_dim;
      scalar_t dot = 0;
      const scalar_t used = p[j] * factor;
      ENTITY_SIMD_SUM(dot)
      for (int64_t t = 0; t < head_dim; ++t) {
        dot += go[t] * v[t];
        gv[t] += used * go[t];
      }
      grad_probs[j] = dot * factor;
      weighted += grad_probs[j] * p[j];
    }
    const scalar_t* q = qkv + (s + i) * 3 * dim + h * head_dim;
    scalar_t* gq = grad_qkv + (s + i) * 3 * dim + h * head_dim;
    for (int64_t j = 0; j < m; ++j) {
      const scalar_t grad_score = p[j] * (grad_probs[j] - weighted) * scale;
      const scalar_t* k = qkv + (s + j) * 3 * dim + dim + h * head_dim;
      scalar_t* gk = grad_qkv + (s + j) * 3 * dim + dim + h * head_dim;
      for (int64_t t = 0; t < head_dim; ++t) {
        gq[t] += grad_score * k[t];
        gk[t] += grad_score * q[t];
      }
    }
  });
}

struct AttentionCore : public torch::autograd::Function<AttentionCore> {
  static Tensor forward(AutogradContext* ctx, const Tensor& qkv_in, const Tensor& batch_index,
                        int64_t heads, double p, std::optional<at::Generator> generator,
                        bool record) {
    TORCH_CHECK(qkv_in.dim() == 2 && qkv_in.size(0) == batch_index.numel() &&
                    qkv_in.size(1) % (3 * heads) == 0,
                "attention_core: qkv must be [N, 3 * heads * head_dim] for N entities");
    const Tensor qkv = qkv_in.contiguous();
    const std::vector<int64_t> starts = group_starts(batch_index);
    const int64_t rows = qkv.size(0), dim = qkv.size(1) / 3;
    int64_t total = 0;
    for (size_t g = 0; g + 1 < starts.size(); ++g) {
      const int64_t m = starts[g + 1] - starts[g];
      total += heads * m * m;
    }
    Tensor probs = record ? at::empty({total}, qkv.options()) : Tensor();
    Tensor keep = p > 0 ? draw_keep(total, p, generator, qkv) : Tensor();
    Tensor out = at::empty({rows, dim}, qkv.options());  // every row written
    AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "entity_attention_core", [&] {
      attention_forward<scalar_t>(qkv.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                  record ? probs.data_ptr<scalar_t>() : nullptr,
                                  p > 0 ? keep.data_ptr<scalar_t>() : nullptr, starts, heads,
                                  dim);
    });
    if (record) {
      ctx->save_for_backward({qkv, probs, keep});
      ctx->saved_data["heads"] = heads;
      ctx->saved_data["starts"] = c10::IValue(starts);
    }
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    refuse_double_backward();
    const auto saved = ctx->get_saved_variables();
    const Tensor& qkv = saved[0];
    const Tensor& probs = saved[1];
    const Tensor& keep = saved[2];
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const std::vector<int64_t> starts = ctx->saved_data["starts"].toIntVector();
    const Tensor grad_out = grads[0].contiguous();
    Tensor grad_qkv = at::zeros_like(qkv);
    AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "entity_attention_core_backward", [&] {
      attention_backward<scalar_t>(qkv.data_ptr<scalar_t>(), probs.data_ptr<scalar_t>(),
                                   keep.defined() ? keep.data_ptr<scalar_t>() : nullptr,
                                   grad_out.data_ptr<scalar_t>(), grad_qkv.data_ptr<scalar_t>(),
                                   starts, heads, qkv.size(1) / 3);
    });
    return {grad_qkv, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// ------------------------------------------------- residual + dropout + LayerNorm
// out = LayerNorm(x + dropout(y)) over the last dimension, d wide (biased variance, eps
// inside the square root, as torch.nn.LayerNorm).

struct ResidualLayerNorm : public torch::autograd::Function<ResidualLayerNorm> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x_in, const Tensor& y_in,
                        const Tensor& weight_in, const Tensor& bias_in, double eps, double p,
                        std::optional<at::Generator> generator, bool record) {
    TORCH_CHECK(x_in.sizes() == y_in.sizes() && weight_in.numel() == x_in.size(-1) &&
                    bias_in.numel() == x_in.size(-1),
                "residual_layer_norm: x and y of one shape, weight and bias of its last size");
    const Tensor x = x_in.contiguous(), y = y_in.contiguous();
    const Tensor weight = weight_in.contiguous(), bias = bias_in.contiguous();
    const int64_t d = x.size(-1), rows = d ? x.numel() / d : 0;  // any leading dimensions
    Tensor keep = p > 0 ? draw_keep(rows * d, p, generator, x) : Tensor();
    Tensor out = at::empty_like(x);
    Tensor normed = record ? at::empty_like(x) : Tensor();
    Tensor rstd = at::empty({rows}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "entity_residual_layer_norm", [&] {
      const scalar_t *px = x.data_ptr<scalar_t>(), *py = y.data_ptr<scalar_t>();
      const scalar_t *pw = weight.data_ptr<scalar_t>(), *pb = bias.data_ptr<scalar_t>();
      const scalar_t* pk = keep.defined() ? keep.data_ptr<scalar_t>() : nullptr;
      scalar_t* po = out.data_ptr<scalar_t>();
      scalar_t* pn = record ? normed.data_ptr<scalar_t>() : po;
      scalar_t* pr = rstd.data_ptr<scalar_t>();
      for_rows(rows, d, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t *a = px + i * d, *c = py + i * d;
          scalar_t* z = pn + i * d;
          scalar_t mean = 0;
          ENTITY_SIMD_SUM(mean)
          for (int64_t j = 0; j < d; ++j) {
            z[j] = a[j] + (pk ? c[j] * pk[i * d + j] : c[j]);
            mean += z[j];
          }
          mean /= d;
          scalar_t var = 0;
          ENTITY_SIMD_SUM(var)
          for (int64_t j = 0; j < d; ++j) {
            z[j] -= mean;
            var += z[j] * z[j];
          }
          const scalar_t inv = scalar_t(1) / std::sqrt(var / d + static_cast<scalar_t>(eps));
          pr[i] = inv;
          scalar_t* o = po + i * d;
          for (int64_t j = 0; j < d; ++j) {
            z[j] *= inv;
            o[j] = z[j] * pw[j] + pb[j];
          }
        }
      });
    });
    if (record) ctx->save_for_backward({normed, rstd, keep, weight});
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    refuse_double_backward();
    const auto saved = ctx->get_saved_variables();
    const Tensor &normed = saved[0], &rstd = saved[1], &keep = saved[2], &weight = saved[3];
    const Tensor grad_out = grads[0].contiguous();
    const int64_t d = normed.size(-1), rows = d ? normed.numel() / d : 0;
    Tensor grad_x = at::empty_like(normed);
    Tensor grad_y = ctx->needs_input_grad(1) ? at::empty_like(normed) : Tensor();
    Tensor grad_weight = at::zeros_like(weight), grad_bias = at::zeros_like(weight);
    AT_DISPATCH_FLOATING_TYPES(normed.scalar_type(), "entity_residual_layer_norm_backward", [&] {
      const scalar_t *pn = normed.data_ptr<scalar_t>(), *pr = rstd.data_ptr<scalar_t>();
      const scalar_t *pw = weight.data_ptr<scalar_t>(), *pg = grad_out.data_ptr<scalar_t>();
      const scalar_t* pk = keep.defined() ? keep.data_ptr<scalar_t>() : nullptr;
      scalar_t *gx = grad_x.data_ptr<scalar_t>(), *gw = grad_weight.data_ptr<scalar_t>();
      scalar_t* gb = grad_bias.data_ptr<scalar_t>();
      scalar_t* gy = grad_y.defined() ? grad_y.data_ptr<scalar_t>() : nullptr;
      for (int64_t i = 0; i < rows; ++i) {
        const scalar_t *z = pn + i * d, *g = pg + i * d;
        scalar_t mean_g = 0, mean_gz = 0;
        ENTITY_SIMD_SUM(mean_g, mean_gz)
        for (int64_t j = 0; j < d; ++j) {
          const scalar_t gj = g[j] * pw[j];
          mean_g += gj;
          mean_gz += gj * z[j];
          gw[j] += g[j] * z[j];
          gb[j] += g[j];
        }
        mean_g /= d;
        mean_gz /= d;
        for (int64_t j = 0; j < d; ++j) {
          const scalar_t dz = pr[i] * (g[j] * pw[j] - mean_g - z[j] * mean_gz);
          gx[i * d + j] = dz;
          if (gy) gy[i * d + j] = pk ? dz * pk[i * d + j] : dz;
        }
      }
    });
    return {grad_x, grad_y, grad_weight, grad_bias, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// ------------------------------------------------------------ gate + fused rows
// pre = W_t w + b_t over the tokens [T, H] (BERT's intermediate product, taken in here so
// that the token gate's few rows add into the tokens' gradient instead of a grid of zeros);
// hidden = act(pre) over the token grid [T, I], except the aligned rows index[k], which are
// act(pre[index[k]] + gate_k * knowledge[k]); returns (hidden, those rows). The gate:
// none (no scale: 1), layer (tanh(scale)) or token (2 tanh(scale) sigmoid(trust . [token;
// entity; link] + bias), trust_weight [1, H + De (+ 1)]), as ErnieKGEntityGate.

// An input the caller does not have comes as an empty tensor (autograd functions take no
// undefined ones).

enum GateKind : int64_t { kNoGate = 0, kLayerGate = 1, kTokenGate = 2 };

bool given(const Tensor& tensor) { return tensor.numel() > 0; }

GateKind gate_kind(const Tensor& scale, const Tensor& trust_weight) {
  if (!given(scale)) return kNoGate;
  return given(trust_weight) ? kTokenGate : kLayerGate;
}

struct FuseRows : public torch::autograd::Function<FuseRows> {
  static tensor_list forward(AutogradContext* ctx, const Tensor& tokens_in,
                             const Tensor& token_weight, const Tensor& token_bias,
                             const Tensor& knowledge_in, const Tensor& index_in,
                             const Tensor& entities_in, const Tensor& links_in,
                             const Tensor& trust_weight, const Tensor& trust_bias,
                             const Tensor& scale, std::string approximate, bool record) {
    TORCH_CHECK(tokens_in.dim() == 2 && token_weight.dim() == 2 && knowledge_in.dim() == 2 &&
                    knowledge_in.size(0) == index_in.numel() &&
                    knowledge_in.size(1) == token_weight.size(0),
                "fuse_rows: tokens [T, H], token weight [I, H], knowledge [N, I] for N aligned "
                "rows");
    const Tensor tokens = tokens_in.contiguous(), knowledge = knowledge_in.contiguous();
    const Tensor pre = at::linear(tokens, token_weight, token_bias);  // W_t w_j + b_t
    const Tensor index = index_in.to(torch::kLong).contiguous();
    const GateKind kind = gate_kind(scale, trust_weight);
    const int64_t n = index.numel(), width = pre.size(1);
    Tensor entities, links;
    Tensor sig = at::empty({n}, pre.options());  // sigmoid(trust) per row (token gate)
    Tensor gate = at::empty({n}, pre.options());
    if (kind == kTokenGate) {
      entities = entities_in.contiguous();
      links = given(links_in) ? links_in.contiguous() : Tensor();
    }
    AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "entity_fuse_rows", [&] {
      const int64_t* idx = index.data_ptr<int64_t>();
      scalar_t* pg = gate.data_ptr<scalar_t>();
      scalar_t* ps = sig.data_ptr<scalar_t>();
      const scalar_t opening = kind == kNoGate ? scalar_t(1) : std::tanh(scale.item<scalar_t>());
      for (int64_t i = 0; i < n; ++i) pg[i] = opening;
      if (kind == kTokenGate) {
        const int64_t h = tokens.size(1), de = entities.size(1);
        const Tensor tw = trust_weight.contiguous();
        const scalar_t* w = tw.data_ptr<scalar_t>();
        const scalar_t b = trust_bias.item<scalar_t>();
        const scalar_t *tok = tokens.data_ptr<scalar_t>(), *ent = entities.data_ptr<scalar_t>();
        const scalar_t* lk = links.defined() ? links.data_ptr<scalar_t>() : nullptr;
        const bool reads_links = tw.numel() > h + de;
        for_rows(n, h + de, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            scalar_t trust = b;
            const scalar_t *t = tok + idx[i] * h, *e = ent + i * de;
            ENTITY_SIMD_SUM(trust)
            for (int64_t j = 0; j < h; ++j) trust += w[j] * t[j];
            ENTITY_SIMD_SUM(trust)
            for (int64_t j = 0; j < de; ++j) trust += w[h + j] * e[j];
            if (reads_links && lk) trust += w[h + de] * lk[i];
            ps[i] = scalar_t(1) / (scalar_t(1) + std::exp(-trust));
            pg[i] *= 2 * ps[i];
          }
        });
      }
      // pre is this call's own product: the aligned rows take their knowledge in place, so
      // one GELU covers the grid and pre keeps every row's pre-activation for the backward.
      scalar_t* pp = pre.data_ptr<scalar_t>();
      const scalar_t* pk = knowledge.data_ptr<scalar_t>();
      for_rows(n, width, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          scalar_t* row = pp + idx[i] * width;
          const scalar_t *k = pk + i * width, factor = pg[i];
          for (int64_t j = 0; j < width; ++j) row[j] += factor * k[j];
        }
      });
    });
    Tensor hidden = at::gelu(pre, approximate);
    Tensor fused = at::empty({n, width}, pre.options());
    AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "entity_fuse_rows_gather", [&] {
      gather_rows(fused.data_ptr<scalar_t>(), hidden.data_ptr<scalar_t>(),
                  index.data_ptr<int64_t>(), n, width);
    });
    if (record) {
      ctx->save_for_backward({tokens, token_weight, pre, knowledge, index, entities, links,
                              trust_weight, scale, sig, gate});
      ctx->saved_data["approximate"] = approximate;
      ctx->saved_data["kind"] = static_cast<int64_t>(kind);
    }
    return {hidden, fused};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    refuse_double_backward();
    const auto saved = ctx->get_saved_variables();
    const Tensor &tokens = saved[0], &token_weight = saved[1], &pre = saved[2];
    const Tensor &knowledge = saved[3], &index = saved[4], &entities = saved[5];
    const Tensor &links = saved[6], &trust_weight = saved[7], &scale = saved[8];
    const Tensor &sig = saved[9], &gate = saved[10];
    const std::string approximate = ctx->saved_data["approximate"].toStringRef();
    const auto kind = static_cast<GateKind>(ctx->saved_data["kind"].toInt());
    const Tensor grad_hidden = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(pre);
    const Tensor grad_fused = grads[1].defined() ? grads[1].contiguous() : Tensor();
    const int64_t n = index.numel(), width = pre.size(1);
    const int64_t* idx = index.data_ptr<int64_t>();
    Tensor grad_pre = at::gelu_backward(grad_hidden, pre, approximate).contiguous();
    if (grad_fused.defined()) {  // the fused rows' own gradient joins at their pre-activations
      AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "entity_fuse_rows_rows", [&] {
        Tensor rows = at::empty({n, width}, pre.options());
        gather_rows(rows.data_ptr<scalar_t>(), pre.data_ptr<scalar_t>(), idx, n, width);
        const Tensor extra = at::gelu_backward(grad_fused, rows, approximate).contiguous();
        const scalar_t* pe = extra.data_ptr<scalar_t>();
        scalar_t* gp = grad_pre.data_ptr<scalar_t>();
        for_rows(n, width, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            scalar_t* row = gp + idx[i] * width;
            const scalar_t* add = pe + i * width;
            for (int64_t j = 0; j < width; ++j) row[j] += add[j];
          }
        });
      });
    }
    // W_t's products, as ATen's linear backward computes them; the token gate's rows then
    // add into the tokens' gradient in place (no [T, H] grid of zeros for a few rows).
    Tensor grad_tokens = ctx->needs_input_grad(0) ? at::mm(grad_pre, token_weight) : Tensor();
    Tensor grad_token_weight =
        ctx->needs_input_grad(1) ? at::mm(grad_pre.t(), tokens) : Tensor();
    Tensor grad_token_bias = ctx->needs_input_grad(2) ? grad_pre.sum(0) : Tensor();
    Tensor grad_knowledge = at::empty_like(knowledge);
    Tensor grad_gate = at::empty({n}, pre.options());
    Tensor grad_entities, grad_trust_weight, grad_trust_bias, grad_scale;
    AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "entity_fuse_rows_backward", [&] {
      const scalar_t *gp = grad_pre.data_ptr<scalar_t>(), *pk = knowledge.data_ptr<scalar_t>();
      const scalar_t* pg = gate.data_ptr<scalar_t>();
      scalar_t *gk = grad_knowledge.data_ptr<scalar_t>(), *gg = grad_gate.data_ptr<scalar_t>();
      for_rows(n, width, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t *g = gp + idx[i] * width, *k = pk + i * width;
          scalar_t* out = gk + i * width;
          const scalar_t factor = pg[i];
          scalar_t dot = 0;
          ENTITY_SIMD_SUM(dot)
          for (int64_t j = 0; j < width; ++j) {
            out[j] = g[j] * factor;
            dot += g[j] * k[j];
          }
          gg[i] = dot;
        }
      });
      if (kind == kNoGate) return;
      const scalar_t opening = std::tanh(scale.item<scalar_t>());
      const scalar_t slope = 1 - opening * opening;  // d tanh(s) / ds
      scalar_t grad_s = 0;
      if (kind == kLayerGate) {
        for (int64_t i = 0; i < n; ++i) grad_s += gg[i] * slope;
        grad_scale = at::scalar_tensor(grad_s, scale.options());
        return;
      }
      const int64_t h = tokens.size(1), de = entities.size(1);
      const Tensor tw = trust_weight.contiguous();
      const scalar_t* w = tw.data_ptr<scalar_t>();
      const bool reads_links = tw.numel() > h + de;
      const scalar_t *ps = sig.data_ptr<scalar_t>(), *tok = tokens.data_ptr<scalar_t>();
      const scalar_t* ent = entities.data_ptr<scalar_t>();
      const scalar_t* lk = links.defined() ? links.data_ptr<scalar_t>() : nullptr;
      grad_trust_weight = at::zeros_like(tw);
      scalar_t* gw = grad_trust_weight.data_ptr<scalar_t>();
      scalar_t* gt = grad_tokens.defined() ? grad_tokens.data_ptr<scalar_t>() : nullptr;
      scalar_t grad_b = 0;
      const bool want_entities = ctx->needs_input_grad(5);
      if (want_entities) grad_entities = at::empty_like(entities);
      for (int64_t i = 0; i < n; ++i) {
        grad_s += gg[i] * 2 * ps[i] * slope;
        const scalar_t grad_trust = gg[i] * 2 * opening * ps[i] * (1 - ps[i]);
        grad_b += grad_trust;
        const scalar_t *t = tok + idx[i] * h, *e = ent + i * de;
        for (int64_t j = 0; j < h; ++j) gw[j] += grad_trust * t[j];
        for (int64_t j = 0; j < de; ++j) gw[h + j] += grad_trust * e[j];
        if (reads_links && lk) gw[h + de] += grad_trust * lk[i];
        if (gt) {
          scalar_t* row = gt + idx[i] * h;
          for (int64_t j = 0; j < h; ++j) row[j] += grad_trust * w[j];
        }
        if (want_entities) {
          scalar_t* ge = grad_entities.data_ptr<scalar_t>() + i * de;
          for (int64_t j = 0; j < de; ++j) ge[j] = grad_trust * w[h + j];
        }
      }
      grad_scale = at::scalar_tensor(grad_s, scale.options());
      grad_trust_bias = at::full({1}, grad_b, tw.options());
    });
    return {grad_tokens, grad_token_weight, grad_token_bias, grad_knowledge, Tensor(),
            grad_entities, Tensor(), grad_trust_weight, grad_trust_bias, grad_scale, Tensor(),
            Tensor()};
  }
};

Tensor optional_tensor(const std::optional<Tensor>& tensor, const Tensor& like) {
  return tensor.has_value() ? *tensor : at::empty({0}, like.options());
}

// Whether autograd records a call on these tensors (a Function's forward runs with grad
// mode off, so the wrappers ask before calling it). Where it does not (inference), the
// wrappers run the forward directly, without an autograd node (ctx null, nothing saved).
bool records(std::initializer_list<Tensor> tensors) {
  if (!at::GradMode::is_enabled()) return false;
  for (const Tensor& tensor : tensors) {
    if (tensor.defined() && tensor.requires_grad()) return true;
  }
  return false;
}

}  // namespace

Tensor attention_core(const Tensor& qkv, const Tensor& batch_index, int64_t heads, double p,
                      std::optional<at::Generator> generator) {
  if (!records({qkv})) {
    return AttentionCore::forward(nullptr, qkv, batch_index, heads, p, generator, false);
  }
  return AttentionCore::apply(qkv, batch_index, heads, p, generator, true);
}

Tensor residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& weight,
                           const Tensor& bias, double eps, double p,
                           std::optional<at::Generator> generator) {
  if (!records({x, y, weight, bias})) {
    return ResidualLayerNorm::forward(nullptr, x, y, weight, bias, eps, p, generator, false);
  }
  return ResidualLayerNorm::apply(x, y, weight, bias, eps, p, generator, true);
}

std::vector<Tensor> fuse_rows(const Tensor& tokens, const Tensor& token_weight,
                              const Tensor& token_bias, const Tensor& knowledge,
                              const Tensor& index, std::optional<Tensor> entities,
                              std::optional<Tensor> links, std::optional<Tensor> trust_weight,
                              std::optional<Tensor> trust_bias, std::optional<Tensor> scale,
                              const std::string& approximate) {
  const Tensor e = optional_tensor(entities, tokens), l = optional_tensor(links, tokens);
  const Tensor w = optional_tensor(trust_weight, tokens), b = optional_tensor(trust_bias, tokens);
  const Tensor s = optional_tensor(scale, tokens);
  if (!records({tokens, token_weight, token_bias, knowledge, e, w, b, s})) {
    return FuseRows::forward(nullptr, tokens, token_weight, token_bias, knowledge, index, e, l, w,
                             b, s, approximate, false);
  }
  return FuseRows::apply(tokens, token_weight, token_bias, knowledge, index, e, l, w, b, s,
                         approximate, true);
}

// The entity modules' whole forward, their products included (ATen's, recorded by autograd
// as from Python): one call from Python per module.

Tensor entity_attention(const Tensor& states, const Tensor& qkv_weight, const Tensor& qkv_bias,
                        const Tensor& dense_weight, const Tensor& dense_bias,
                        const Tensor& norm_weight, const Tensor& norm_bias,
                        const Tensor& batch_index, int64_t heads, double eps,
                        double attention_dropout, double hidden_dropout,
                        std::optional<at::Generator> generator) {
  const Tensor qkv = at::linear(states, qkv_weight, qkv_bias);
  const Tensor context = attention_core(qkv, batch_index, heads, attention_dropout, generator);
  return residual_layer_norm(states, at::linear(context, dense_weight, dense_bias), norm_weight,
                             norm_bias, eps, hidden_dropout, generator);
}

// W_t w + b_t over the tokens, W_e e + b_e, the gate and the fused rows, then (where the layer
// has one) the entity output LayerNorm(e + dropout(W_oe fused + b_oe)): {hidden, fused rows,
// next entity states or None}.
std::vector<Tensor> entity_fusion(
    const Tensor& tokens, const Tensor& token_weight, const Tensor& token_bias,
    const Tensor& entities, const Tensor& weight, const Tensor& bias, const Tensor& index,
    std::optional<Tensor> links, std::optional<Tensor> trust_weight,
    std::optional<Tensor> trust_bias, std::optional<Tensor> scale, const std::string& approximate,
    std::optional<Tensor> output_weight, std::optional<Tensor> output_bias,
    std::optional<Tensor> output_norm_weight, std::optional<Tensor> output_norm_bias,
    double output_eps, double output_dropout, std::optional<at::Generator> generator) {
  const Tensor knowledge = at::linear(entities, weight, bias);
  const bool token_gate = trust_weight.has_value();
  std::vector<Tensor> out = fuse_rows(
      tokens, token_weight, token_bias, knowledge, index,
      token_gate ? std::optional<Tensor>(entities) : std::nullopt, links, trust_weight,
      trust_bias, scale, approximate);
  Tensor next;
  if (output_weight.has_value()) {
    next = residual_layer_norm(entities, at::linear(out[1], *output_weight, *output_bias),
                               *output_norm_weight, *output_norm_bias, output_eps,
                               output_dropout, generator);
  }
  out.push_back(next);
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("entity_fusion", &entity_fusion,
        "W_t w + b_t, W_e e + b_e, gate, fused rows, entity output");
  m.def("entity_attention", &entity_attention, "ErnieKGEntityAttention's forward");
  m.def("attention_core", &attention_core, "Entity self-attention within each sequence");
  m.def("residual_layer_norm", &residual_layer_norm, "LayerNorm(x + dropout(y))");
  m.def("fuse_rows", &fuse_rows, "W_t w + b_t, the knowledge gate and the fused rows");
}
