/*
 * Runs every CPU kernel of the installed library on the cases of csrc/tests/data (inputs and the
 * outputs the reference computed for them, written by tests/native_expected.py) and compares.
 * Each case runs in float64 and float32, once on contiguous tensors with one thread and once on
 * strided ones (every other element of a buffer twice as long) with three threads. Output
 * elements start as NaN, so one a kernel never writes fails; the gaps between strided elements
 * hold a sentinel that must survive, so a write outside the tensor fails too.
 *
 *   test_expected DATA_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyreversible/kernels.h"

#define MAX_ITEMS 48
#define MAX_RANK 4
#define SENTINEL 1234.5

/* One line of a case: an int or a tensor of float64 values. */
typedef struct item {
  char name[32];
  int is_tensor;
  long long value;
  int rank;
  int64_t dims[MAX_RANK];
  int64_t numel;
  double* data;
} item;

typedef struct test_case {
  char entry[64];
  char name[64];
  int count;
  item items[MAX_ITEMS];
} test_case;

/* A tensor handed to a kernel: its buffer, element strides, and the case item it mirrors. */
typedef struct tensor {
  const item* ref;
  int dtype;
  int64_t strides[MAX_RANK];
  int64_t spread; /* elements of the buffer per element of the tensor */
  int64_t span;   /* elements of the buffer */
  void* data;
} tensor;

typedef struct run_config {
  int dtype;
  int spread; /* 1: contiguous; 2: every other element */
  int threads;
} run_config;

static int failures = 0;
static int checks = 0;

static void* xmalloc(size_t bytes) {
  void* p = malloc(bytes ? bytes : 1);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

static const item* find(const test_case* c, const char* name) {
  for (int i = 0; i < c->count; ++i)
    if (strcmp(c->items[i].name, name) == 0) return &c->items[i];
  return NULL;
}

static int64_t get_int(const test_case* c, const char* name) {
  const item* it = find(c, name);
  if (!it || it->is_tensor) {
    fprintf(stderr, "%s %s: no int %s\n", c->entry, c->name, name);
    exit(2);
  }
  return it->value;
}

/* Reads the next case of f into c; 0 at the end of the file. */
static int read_case(FILE* f, test_case* c) {
  char word[64];
  memset(c, 0, sizeof(*c));
  while (fscanf(f, "%63s", word) == 1) {
    if (word[0] == '#') {
      int ch;
      while ((ch = fgetc(f)) != '\n' && ch != EOF) {
      }
      continue;
    }
    if (strcmp(word, "case") == 0) {
      if (fscanf(f, "%63s %63s", c->entry, c->name) != 2) break;
      continue;
    }
    if (strcmp(word, "end") == 0) return 1;
    if (c->count == MAX_ITEMS) break;
    item* it = &c->items[c->count++];
    if (strcmp(word, "int") == 0) {
      if (fscanf(f, "%31s %lld", it->name, &it->value) != 2) break;
    } else if (strcmp(word, "tensor") == 0) {
      it->is_tensor = 1;
      if (fscanf(f, "%31s %d", it->name, &it->rank) != 2 || it->rank < 1 || it->rank > MAX_RANK)
        break;
      it->numel = 1;
      for (int d = 0; d < it->rank; ++d) {
        long long n;
        if (fscanf(f, "%lld", &n) != 1) goto bad;
        it->dims[d] = n;
        it->numel *= n;
      }
      it->data = (double*)xmalloc((size_t)it->numel * sizeof(double));
      for (int64_t i = 0; i < it->numel; ++i)
        if (fscanf(f, "%lf", &it->data[i]) != 1) goto bad;
    } else {
      break;
    }
  }
bad:
  if (c->count || c->entry[0]) {
    fprintf(stderr, "malformed case %s %s\n", c->entry, c->name);
    exit(2);
  }
  return 0;
}

static void free_case(test_case* c) {
  for (int i = 0; i < c->count; ++i) free(c->items[i].data);
}

static size_t dtype_size(int dtype) { return dtype == PYR_FLOAT64 ? 8 : 4; }

static double load(const tensor* t, int64_t i) {
  return t->dtype == PYR_FLOAT64 ? ((const double*)t->data)[i] : ((const float*)t->data)[i];
}

static void store(tensor* t, int64_t i, double v) {
  if (t->dtype == PYR_FLOAT64)
    ((double*)t->data)[i] = v;
  else
    ((float*)t->data)[i] = (float)v;
}

/* The buffer offset of element e (row-major index) of t. */
static int64_t offset_of(const tensor* t, int64_t e) {
  int64_t off = 0;
  for (int d = t->ref->rank - 1; d >= 0; --d) {
    off += (e % t->ref->dims[d]) * t->strides[d];
    e /= t->ref->dims[d];
  }
  return off;
}

/* A tensor shaped like case item `name`, every `spread`-th element of its buffer, the gaps
   holding SENTINEL; its elements are the item's values (inputs) or NaN (outputs). */
static tensor make(const test_case* c, const char* name, int dtype, int spread, int is_output) {
  tensor t;
  memset(&t, 0, sizeof(t));
  t.ref = find(c, name);
  if (!t.ref || !t.ref->is_tensor) {
    fprintf(stderr, "%s %s: no tensor %s\n", c->entry, c->name, name);
    exit(2);
  }
  t.dtype = dtype;
  int64_t stride = spread;
  for (int d = t.ref->rank - 1; d >= 0; --d) {
    t.strides[d] = stride;
    stride *= t.ref->dims[d];
  }
  t.spread = spread;
  t.span = t.ref->numel * spread;
  t.data = xmalloc((size_t)t.span * dtype_size(dtype));
  for (int64_t i = 0; i < t.span; ++i) store(&t, i, SENTINEL);
  for (int64_t e = 0; e < t.ref->numel; ++e)
    store(&t, offset_of(&t, e), is_output ? NAN : t.ref->data[e]);
  return t;
}

/* An optional input: a NULL buffer when the case has no such tensor. */
static tensor make_optional(const test_case* c, const char* name, int dtype) {
  if (find(c, name)) return make(c, name, dtype, 1, 0);
  tensor t;
  memset(&t, 0, sizeof(t));
  return t;
}

static void check(const test_case* c, const run_config* rc, const tensor* t) {
  const double tol = rc->dtype == PYR_FLOAT64 ? 1e-10 : 1e-4;
  int64_t bad = 0, first = -1;
  for (int64_t e = 0; e < t->ref->numel; ++e) {
    const double got = load(t, offset_of(t, e)), want = t->ref->data[e];
    if (!(fabs(got - want) <= tol * (1 + fabs(want)))) {
      if (first < 0) first = e;
      ++bad;
    }
  }
  int64_t outside = 0;
  for (int64_t i = 0; i < t->span; ++i) {
    if (i % t->spread != 0 && load(t, i) != SENTINEL) ++outside;
  }
  ++checks;
  if (bad || outside) {
    ++failures;
    fprintf(stderr, "FAIL %s %s (%s, spread %d, %d threads): %s: %lld of %lld elements differ",
            c->entry, c->name, rc->dtype == PYR_FLOAT64 ? "float64" : "float32", rc->spread,
            rc->threads, t->ref->name, (long long)bad, (long long)t->ref->numel);
    if (first >= 0)
      fprintf(stderr, " (first: element %lld, got %.9g, want %.9g)", (long long)first,
              load(t, offset_of(t, first)), t->ref->data[first]);
    fprintf(stderr, "; %lld writes outside\n", (long long)outside);
  }
}

static void expect_success(const test_case* c, pyr_status s) {
  if (s != PYR_SUCCESS) {
    fprintf(stderr, "FAIL %s %s: status %d (%s)\n", c->entry, c->name, (int)s,
            pyr_status_string(s));
    ++failures;
  }
}

static void release(tensor* ts, int n) {
  for (int i = 0; i < n; ++i) free(ts[i].data);
}

static pyr_partition partition_of(const test_case* c) {
  pyr_partition p;
  p.kind = (int32_t)get_int(c, "partition_kind");
  p.parity = (int32_t)get_int(c, "partition_parity");
  p.dim_a = get_int(c, "partition_dim_a");
  p.dim_b = get_int(c, "partition_dim_b");
  p.offset_a = get_int(c, "partition_offset_a");
  p.offset_b = get_int(c, "partition_offset_b");
  p.row_pairs = get_int(c, "partition_row_pairs");
  p.height = get_int(c, "partition_height");
  return p;
}

static void run_additive_coupling_fwd(const test_case* c, const run_config* rc) {
  tensor t[3] = {make(c, "x", rc->dtype, rc->spread, 0), make(c, "shift", rc->dtype, rc->spread, 0),
                 make(c, "y", rc->dtype, rc->spread, 1)};
  pyr_additive_coupling_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = rc->dtype;
  p.sign = (int32_t)get_int(c, "sign");
  p.batch = get_int(c, "batch");
  p.dim = get_int(c, "dim");
  p.partition = partition_of(c);
  p.x = t[0].data, p.stride_x_b = t[0].strides[0], p.stride_x_d = t[0].strides[1];
  p.shift = t[1].data, p.stride_shift_b = t[1].strides[0], p.stride_shift_d = t[1].strides[1];
  p.y = t[2].data, p.stride_y_b = t[2].strides[0], p.stride_y_d = t[2].strides[1];
  p.num_threads = rc->threads;
  expect_success(c, pyr_additive_coupling_fwd_cpu(&p));
  check(c, rc, &t[2]);
  release(t, 3);
}

/* weights, biases, hidden and their gradients: contiguous, as the ABI asks */
#define LAYER_NAME(buf, prefix, l) (snprintf(buf, sizeof(buf), "%s%d", prefix, l), buf)

static void run_additive_coupling_mlp_fwd(const test_case* c, const run_config* rc) {
  const int layers = (int)get_int(c, "num_layers");
  char name[32];
  tensor x = make(c, "x", rc->dtype, rc->spread, 0), y = make(c, "y", rc->dtype, rc->spread, 1);
  tensor w[PYR_MAX_LAYERS], b[PYR_MAX_LAYERS], h[PYR_MAX_LAYERS];
  pyr_additive_coupling_mlp_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = rc->dtype;
  p.sign = (int32_t)get_int(c, "sign");
  p.batch = get_int(c, "batch");
  p.dim = get_int(c, "dim");
  p.partition = partition_of(c);
  p.num_layers = layers;
  for (int l = 0; l <= layers; ++l) p.widths[l] = get_int(c, LAYER_NAME(name, "width", l));
  for (int l = 0; l < layers; ++l) {
    w[l] = make(c, LAYER_NAME(name, "weight", l), rc->dtype, 1, 0);
    b[l] = make(c, LAYER_NAME(name, "bias", l), rc->dtype, 1, 0);
    p.weight[l] = w[l].data;
    p.bias[l] = b[l].data;
  }
  for (int l = 0; l + 1 < layers; ++l) {
    h[l] = make(c, LAYER_NAME(name, "hidden", l), rc->dtype, 1, 1);
    p.hidden[l] = h[l].data;
  }
  p.x = x.data, p.stride_x_b = x.strides[0], p.stride_x_d = x.strides[1];
  p.y = y.data, p.stride_y_b = y.strides[0], p.stride_y_d = y.strides[1];
  p.num_threads = rc->threads;
  expect_success(c, pyr_additive_coupling_mlp_fwd_cpu(&p));
  check(c, rc, &y);
  for (int l = 0; l + 1 < layers; ++l) check(c, rc, &h[l]);
  release(&x, 1), release(&y, 1), release(w, layers), release(b, layers), release(h, layers - 1);
}

static void run_additive_coupling_mlp_bwd(const test_case* c, const run_config* rc) {
  const int layers = (int)get_int(c, "num_layers");
  char name[32];
  tensor t[3] = {make(c, "x", rc->dtype, rc->spread, 0), make(c, "dy", rc->dtype, rc->spread, 0),
                 make(c, "dx", rc->dtype, rc->spread, 1)};
  tensor w[PYR_MAX_LAYERS], h[PYR_MAX_LAYERS], dw[PYR_MAX_LAYERS], db[PYR_MAX_LAYERS];
  pyr_additive_coupling_mlp_bwd_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = rc->dtype;
  p.sign = (int32_t)get_int(c, "sign");
  p.batch = get_int(c, "batch");
  p.dim = get_int(c, "dim");
  p.partition = partition_of(c);
  p.num_layers = layers;
  for (int l = 0; l <= layers; ++l) p.widths[l] = get_int(c, LAYER_NAME(name, "width", l));
  for (int l = 0; l < layers; ++l) {
    w[l] = make(c, LAYER_NAME(name, "weight", l), rc->dtype, 1, 0);
    dw[l] = make(c, LAYER_NAME(name, "dweight", l), rc->dtype, 1, 1);
    db[l] = make(c, LAYER_NAME(name, "dbias", l), rc->dtype, 1, 1);
    p.weight[l] = w[l].data;
    p.dweight[l] = dw[l].data;
    p.dbias[l] = db[l].data;
  }
  for (int l = 0; l + 1 < layers; ++l) {
    h[l] = make(c, LAYER_NAME(name, "hidden", l), rc->dtype, 1, 0);
    p.hidden[l] = h[l].data;
  }
  p.cond = t[0].data, p.stride_cond_b = t[0].strides[0], p.stride_cond_d = t[0].strides[1];
  p.dy = t[1].data, p.stride_dy_b = t[1].strides[0], p.stride_dy_d = t[1].strides[1];
  p.dx = t[2].data, p.stride_dx_b = t[2].strides[0], p.stride_dx_d = t[2].strides[1];
  p.num_threads = rc->threads;
  expect_success(c, pyr_additive_coupling_mlp_bwd_cpu(&p));
  check(c, rc, &t[2]);
  for (int l = 0; l < layers; ++l) check(c, rc, &dw[l]), check(c, rc, &db[l]);
  release(t, 3), release(w, layers), release(dw, layers), release(db, layers);
  release(h, layers - 1);
}

static void run_causal_conv1d_fwd(const test_case* c, const run_config* rc) {
  tensor t[4] = {make(c, "x", rc->dtype, rc->spread, 0), make(c, "weight", rc->dtype, 1, 0),
                 make_optional(c, "bias", rc->dtype), make(c, "y", rc->dtype, rc->spread, 1)};
  pyr_causal_conv1d_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = rc->dtype;
  p.batch = get_int(c, "batch");
  p.in_channels = get_int(c, "in_channels");
  p.out_channels = get_int(c, "out_channels");
  p.length = get_int(c, "length");
  p.kernel_size = get_int(c, "kernel_size");
  p.dilation = get_int(c, "dilation");
  p.groups = get_int(c, "groups");
  p.x = t[0].data;
  p.stride_x_b = t[0].strides[0], p.stride_x_c = t[0].strides[1], p.stride_x_t = t[0].strides[2];
  p.weight = t[1].data;
  p.bias = t[2].data;
  p.y = t[3].data;
  p.stride_y_b = t[3].strides[0], p.stride_y_c = t[3].strides[1], p.stride_y_t = t[3].strides[2];
  p.num_threads = rc->threads;
  expect_success(c, pyr_causal_conv1d_fwd_cpu(&p));
  check(c, rc, &t[3]);
  release(t, 4);
}

static void run_causal_conv1d_bwd(const test_case* c, const run_config* rc) {
  const int has_bias = find(c, "dbias") != NULL;
  tensor t[6] = {make(c, "x", rc->dtype, rc->spread, 0), make(c, "weight", rc->dtype, 1, 0),
                 make(c, "dy", rc->dtype, rc->spread, 0), make(c, "dx", rc->dtype, rc->spread, 1),
                 make(c, "dweight", rc->dtype, 1, 1)};
  if (has_bias) t[5] = make(c, "dbias", rc->dtype, 1, 1);
  pyr_causal_conv1d_bwd_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = rc->dtype;
  p.batch = get_int(c, "batch");
  p.in_channels = get_int(c, "in_channels");
  p.out_channels = get_int(c, "out_channels");
  p.length = get_int(c, "length");
  p.kernel_size = get_int(c, "kernel_size");
  p.dilation = get_int(c, "dilation");
  p.groups = get_int(c, "groups");
  p.x = t[0].data;
  p.stride_x_b = t[0].strides[0], p.stride_x_c = t[0].strides[1], p.stride_x_t = t[0].strides[2];
  p.weight = t[1].data;
  p.dy = t[2].data;
  p.stride_dy_b = t[2].strides[0], p.stride_dy_c = t[2].strides[1];
  p.stride_dy_t = t[2].strides[2];
  p.dx = t[3].data;
  p.stride_dx_b = t[3].strides[0], p.stride_dx_c = t[3].strides[1];
  p.stride_dx_t = t[3].strides[2];
  p.dweight = t[4].data;
  p.dbias = has_bias ? t[5].data : NULL;
  p.num_threads = rc->threads;
  expect_success(c, pyr_causal_conv1d_bwd_cpu(&p));
  for (int i = 3; i < 5 + has_bias; ++i) check(c, rc, &t[i]);
  release(t, 5 + has_bias);
}

static void run_masked_conv2d_fwd(const test_case* c, const run_config* rc) {
  tensor t[4] = {make(c, "x", rc->dtype, rc->spread, 0),
                 make(c, "weight", rc->dtype, rc->spread, 0), make_optional(c, "bias", rc->dtype),
                 make(c, "y", rc->dtype, rc->spread, 1)};
  pyr_masked_conv2d_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = rc->dtype;
  p.mask_type = (int32_t)get_int(c, "mask_type");
  p.batch = get_int(c, "batch");
  p.in_channels = get_int(c, "in_channels");
  p.out_channels = get_int(c, "out_channels");
  p.height = get_int(c, "height");
  p.width = get_int(c, "width");
  p.kernel_size = get_int(c, "kernel_size");
  p.x = t[0].data;
  p.stride_x_b = t[0].strides[0], p.stride_x_c = t[0].strides[1];
  p.stride_x_h = t[0].strides[2], p.stride_x_w = t[0].strides[3];
  p.weight = t[1].data;
  p.stride_weight_o = t[1].strides[0], p.stride_weight_i = t[1].strides[1];
  p.stride_weight_h = t[1].strides[2], p.stride_weight_w = t[1].strides[3];
  p.bias = t[2].data;
  p.y = t[3].data;
  p.stride_y_b = t[3].strides[0], p.stride_y_c = t[3].strides[1];
  p.stride_y_h = t[3].strides[2], p.stride_y_w = t[3].strides[3];
  p.num_threads = rc->threads;
  expect_success(c, pyr_masked_conv2d_fwd_cpu(&p));
  check(c, rc, &t[3]);
  release(t, 4);
}

static void run_masked_conv2d_bwd(const test_case* c, const run_config* rc) {
  const int has_bias = find(c, "dbias") != NULL;
  tensor t[6] = {make(c, "x", rc->dtype, rc->spread, 0),
                 make(c, "weight", rc->dtype, rc->spread, 0),
                 make(c, "dy", rc->dtype, rc->spread, 0), make(c, "dx", rc->dtype, rc->spread, 1),
                 make(c, "dweight", rc->dtype, 1, 1)};
  if (has_bias) t[5] = make(c, "dbias", rc->dtype, 1, 1);
  pyr_masked_conv2d_bwd_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = rc->dtype;
  p.mask_type = (int32_t)get_int(c, "mask_type");
  p.batch = get_int(c, "batch");
  p.in_channels = get_int(c, "in_channels");
  p.out_channels = get_int(c, "out_channels");
  p.height = get_int(c, "height");
  p.width = get_int(c, "width");
  p.kernel_size = get_int(c, "kernel_size");
  p.x = t[0].data;
  p.stride_x_b = t[0].strides[0], p.stride_x_c = t[0].strides[1];
  p.stride_x_h = t[0].strides[2], p.stride_x_w = t[0].strides[3];
  p.weight = t[1].data;
  p.stride_weight_o = t[1].strides[0], p.stride_weight_i = t[1].strides[1];
  p.stride_weight_h = t[1].strides[2], p.stride_weight_w = t[1].strides[3];
  p.dy = t[2].data;
  p.stride_dy_b = t[2].strides[0], p.stride_dy_c = t[2].strides[1];
  p.stride_dy_h = t[2].strides[2], p.stride_dy_w = t[2].strides[3];
  p.dx = t[3].data;
  p.stride_dx_b = t[3].strides[0], p.stride_dx_c = t[3].strides[1];
  p.stride_dx_h = t[3].strides[2], p.stride_dx_w = t[3].strides[3];
  p.dweight = t[4].data;
  p.dbias = has_bias ? t[5].data : NULL;
  p.num_threads = rc->threads;
  expect_success(c, pyr_masked_conv2d_bwd_cpu(&p));
  for (int i = 3; i < 5 + has_bias; ++i) check(c, rc, &t[i]);
  release(t, 5 + has_bias);
}

/* The WaveNet layer's conditioning, common to forward and backward: k[LOCAL], k[LOCAL_W],
   k[GLOBAL], k[GLOBAL_W], with NULL buffers when the case has none. */
enum { LOCAL, LOCAL_W, GLOBAL, GLOBAL_W };

static void conditioning_of(const test_case* c, const run_config* rc, tensor k[4]) {
  memset(k, 0, 4 * sizeof(tensor));
  if (get_int(c, "local_channels")) {
    k[LOCAL] = make(c, "local_cond", rc->dtype, rc->spread, 0);
    k[LOCAL_W] = make(c, "local_weight", rc->dtype, 1, 0);
  }
  if (get_int(c, "global_channels")) {
    k[GLOBAL] = make(c, "global_cond", rc->dtype, rc->spread, 0);
    k[GLOBAL_W] = make(c, "global_weight", rc->dtype, 1, 0);
  }
}

static void run_wavenet_layer_fwd(const test_case* c, const run_config* rc) {
  tensor t[10] = {
      make(c, "x", rc->dtype, rc->spread, 0),       make(c, "conv_weight", rc->dtype, 1, 0),
      make_optional(c, "conv_bias", rc->dtype),     make(c, "residual_weight", rc->dtype, 1, 0),
      make_optional(c, "residual_bias", rc->dtype), make(c, "skip_weight", rc->dtype, 1, 0),
      make_optional(c, "skip_bias", rc->dtype),     make(c, "x_next", rc->dtype, rc->spread, 1),
      make(c, "skip", rc->dtype, rc->spread, 1),    make(c, "gate_input", rc->dtype, 1, 1)};
  tensor k[4];
  conditioning_of(c, rc, k);
  pyr_wavenet_layer_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = rc->dtype;
  p.batch = get_int(c, "batch");
  p.residual_channels = get_int(c, "residual_channels");
  p.gate_channels = get_int(c, "gate_channels");
  p.skip_channels = get_int(c, "skip_channels");
  p.length = get_int(c, "length");
  p.kernel_size = get_int(c, "kernel_size");
  p.dilation = get_int(c, "dilation");
  p.local_channels = get_int(c, "local_channels");
  p.global_channels = get_int(c, "global_channels");
  p.x = t[0].data;
  p.stride_x_b = t[0].strides[0], p.stride_x_c = t[0].strides[1], p.stride_x_t = t[0].strides[2];
  p.conv_weight = t[1].data, p.conv_bias = t[2].data;
  p.residual_weight = t[3].data, p.residual_bias = t[4].data;
  p.skip_weight = t[5].data, p.skip_bias = t[6].data;
  p.local_cond = k[LOCAL].data, p.local_weight = k[LOCAL_W].data;
  p.stride_local_b = k[LOCAL].strides[0], p.stride_local_c = k[LOCAL].strides[1];
  p.stride_local_t = k[LOCAL].strides[2];
  p.global_cond = k[GLOBAL].data, p.global_weight = k[GLOBAL_W].data;
  p.stride_global_b = k[GLOBAL].strides[0], p.stride_global_c = k[GLOBAL].strides[1];
  p.x_next = t[7].data;
  p.stride_x_next_b = t[7].strides[0], p.stride_x_next_c = t[7].strides[1];
  p.stride_x_next_t = t[7].strides[2];
  p.skip = t[8].data;
  p.stride_skip_b = t[8].strides[0], p.stride_skip_c = t[8].strides[1];
  p.stride_skip_t = t[8].strides[2];
  p.gate_input = t[9].data;
  p.num_threads = rc->threads;
  expect_success(c, pyr_wavenet_layer_fwd_cpu(&p));
  for (int i = 7; i < 10; ++i) check(c, rc, &t[i]);
  release(t, 10);
  release(k, 4);
}

static void run_wavenet_layer_bwd(const test_case* c, const run_config* rc) {
  const int has_bias = find(c, "dconv_bias") != NULL;
  const int has_local = get_int(c, "local_channels") > 0;
  const int has_global = get_int(c, "global_channels") > 0;
  const int dt = rc->dtype, sp = rc->spread;
  tensor in[6] = {make(c, "x", dt, sp, 0),
                  make(c, "conv_weight", dt, 1, 0),
                  make(c, "residual_weight", dt, 1, 0),
                  make(c, "skip_weight", dt, 1, 0),
                  make(c, "gate_input", dt, 1, 0),
                  make(c, "dx_next", dt, sp, 0)};
  tensor dskip = make(c, "dskip", dt, sp, 0);
  tensor k[4];
  conditioning_of(c, rc, k);
  /* gradients: dx, dconv_weight, dresidual_weight, dskip_weight, then the optional ones */
  tensor out[11];
  int n = 0;
  memset(out, 0, sizeof(out));
  out[n++] = make(c, "dx", dt, sp, 1);
  out[n++] = make(c, "dconv_weight", dt, 1, 1);
  out[n++] = make(c, "dresidual_weight", dt, 1, 1);
  out[n++] = make(c, "dskip_weight", dt, 1, 1);
  pyr_wavenet_layer_bwd_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = dt;
  p.batch = get_int(c, "batch");
  p.residual_channels = get_int(c, "residual_channels");
  p.gate_channels = get_int(c, "gate_channels");
  p.skip_channels = get_int(c, "skip_channels");
  p.length = get_int(c, "length");
  p.kernel_size = get_int(c, "kernel_size");
  p.dilation = get_int(c, "dilation");
  p.local_channels = get_int(c, "local_channels");
  p.global_channels = get_int(c, "global_channels");
  p.x = in[0].data;
  p.stride_x_b = in[0].strides[0], p.stride_x_c = in[0].strides[1];
  p.stride_x_t = in[0].strides[2];
  p.conv_weight = in[1].data, p.residual_weight = in[2].data, p.skip_weight = in[3].data;
  p.gate_input = in[4].data;
  p.dx_next = in[5].data;
  p.stride_dx_next_b = in[5].strides[0], p.stride_dx_next_c = in[5].strides[1];
  p.stride_dx_next_t = in[5].strides[2];
  p.dskip = dskip.data;
  p.stride_dskip_b = dskip.strides[0], p.stride_dskip_c = dskip.strides[1];
  p.stride_dskip_t = dskip.strides[2];
  p.local_cond = k[LOCAL].data, p.local_weight = k[LOCAL_W].data;
  p.stride_local_b = k[LOCAL].strides[0], p.stride_local_c = k[LOCAL].strides[1];
  p.stride_local_t = k[LOCAL].strides[2];
  p.global_cond = k[GLOBAL].data, p.global_weight = k[GLOBAL_W].data;
  p.stride_global_b = k[GLOBAL].strides[0], p.stride_global_c = k[GLOBAL].strides[1];
  p.dx = out[0].data;
  p.stride_dx_b = out[0].strides[0], p.stride_dx_c = out[0].strides[1];
  p.stride_dx_t = out[0].strides[2];
  p.dconv_weight = out[1].data, p.dresidual_weight = out[2].data, p.dskip_weight = out[3].data;
  if (has_bias) {
    out[n] = make(c, "dconv_bias", dt, 1, 1), p.dconv_bias = out[n++].data;
    out[n] = make(c, "dresidual_bias", dt, 1, 1), p.dresidual_bias = out[n++].data;
    out[n] = make(c, "dskip_bias", dt, 1, 1), p.dskip_bias = out[n++].data;
  }
  if (has_local) {
    out[n] = make(c, "dlocal_cond", dt, sp, 1);
    p.dlocal_cond = out[n].data;
    p.stride_dlocal_b = out[n].strides[0], p.stride_dlocal_c = out[n].strides[1];
    p.stride_dlocal_t = out[n++].strides[2];
    out[n] = make(c, "dlocal_weight", dt, 1, 1), p.dlocal_weight = out[n++].data;
  }
  if (has_global) {
    out[n] = make(c, "dglobal_cond", dt, 1, 1), p.dglobal_cond = out[n++].data;
    out[n] = make(c, "dglobal_weight", dt, 1, 1), p.dglobal_weight = out[n++].data;
  }
  p.num_threads = rc->threads;
  expect_success(c, pyr_wavenet_layer_bwd_cpu(&p));
  for (int i = 0; i < n; ++i) check(c, rc, &out[i]);
  release(in, 6), release(&dskip, 1), release(out, n), release(k, 4);
}

/* queue, weights, cond and logits are contiguous by the ABI (no strides): spread 1 always, the
   configs' threads still vary; the queue is updated in place and must end as queue_out */
static void run_wavenet_step(const test_case* c, const run_config* rc) {
  enum { MAX_WEIGHTS = 1 + 6 * 4 + 4 };
  const int dt = rc->dtype;
  pyr_wavenet_step_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = dt;
  p.batch = get_int(c, "batch");
  p.classes = get_int(c, "classes");
  p.residual_channels = get_int(c, "residual_channels");
  p.gate_channels = get_int(c, "gate_channels");
  p.skip_channels = get_int(c, "skip_channels");
  p.kernel_size = get_int(c, "kernel_size");
  p.num_layers = get_int(c, "num_layers");
  p.position = get_int(c, "position");
  p.steps = get_int(c, "steps");
  p.temperature = (double)get_int(c, "temperature_milli") / 1000;
  p.num_weights = 1 + 6 * p.num_layers + 4;
  if (p.num_weights > MAX_WEIGHTS) {
    fprintf(stderr, "%s %s: more layers than the runner holds\n", c->entry, c->name);
    exit(2);
  }
  int64_t dilations[4];
  for (int64_t l = 0; l < p.num_layers; ++l) {
    char name[32];
    snprintf(name, sizeof(name), "dilation%lld", (long long)l);
    dilations[l] = get_int(c, name);
    p.queue_rows += (p.kernel_size - 1) * dilations[l];
  }
  p.dilations = dilations;
  tensor w[MAX_WEIGHTS];
  const void* weights[MAX_WEIGHTS];
  for (int64_t i = 0; i < p.num_weights; ++i) {
    char name[32];
    snprintf(name, sizeof(name), "weight%lld", (long long)i);
    w[i] = make(c, name, dt, 1, 0);
    weights[i] = w[i].data;
  }
  p.weights = weights;
  const item* x_item = find(c, "x");
  const item* u_item = find(c, "uniform");
  const item* s_item = find(c, "samples");
  int64_t* x = (int64_t*)xmalloc((size_t)p.batch * sizeof(int64_t));
  float* uniform = (float*)xmalloc((size_t)(p.steps * p.batch) * sizeof(float));
  int64_t* samples = (int64_t*)xmalloc((size_t)(p.steps * p.batch) * sizeof(int64_t));
  for (int64_t b = 0; b < p.batch; ++b) x[b] = (int64_t)x_item->data[b];
  for (int64_t i = 0; i < p.steps * p.batch; ++i)
    uniform[i] = (float)u_item->data[i], samples[i] = -1;
  tensor t[3] = {make(c, "queue", dt, 1, 0), make(c, "logits", dt, 1, 1),
                 make_optional(c, "cond", dt)};
  p.x = x, p.uniform = uniform, p.samples = samples;
  p.queue = t[0].data, p.logits = t[1].data, p.cond = t[2].data;
  p.num_threads = rc->threads;
  expect_success(c, pyr_wavenet_step_cpu(&p));
  int64_t bad = 0;
  for (int64_t i = 0; i < p.steps * p.batch; ++i) bad += samples[i] != (int64_t)s_item->data[i];
  ++checks;
  if (bad) {
    ++failures;
    fprintf(stderr, "FAIL %s %s (%s, %d threads): samples: %lld of %lld differ\n", c->entry,
            c->name, dt == PYR_FLOAT64 ? "float64" : "float32", rc->threads, (long long)bad,
            (long long)(p.steps * p.batch));
  }
  check(c, rc, &t[1]);
  t[0].ref = find(c, "queue_out");
  check(c, rc, &t[0]);
  free(x), free(uniform), free(samples);
  release(t, 3), release(w, (int)p.num_weights);
}

/* The reversible block's kernel, pyr_reversible_block_cpu, as the two torch ops call it. In
   place (in_place 1), each output is written over its first operand, which must then hold it. */
static void set_term(pyr_reversible_block_term* term, const tensor* a, const tensor* c,
                     const tensor* out, int32_t sign) {
  term->a = a->data, term->stride_a_b = a->strides[0], term->stride_a_d = a->strides[1];
  term->c = c->data, term->stride_c_b = c->strides[0], term->stride_c_d = c->strides[1];
  term->out = out->data, term->stride_out_b = out->strides[0], term->stride_out_d = out->strides[1];
  term->sign = sign;
}

/* one term: out = x + sign * shift */
static void run_reversible_block_fwd(const test_case* c, const run_config* rc) {
  const int in_place = (int)get_int(c, "in_place");
  tensor t[3] = {make(c, "x", rc->dtype, rc->spread, 0), make(c, "shift", rc->dtype, rc->spread, 0),
                 make(c, "out", rc->dtype, rc->spread, 1)};
  tensor* out = in_place ? &t[0] : &t[2];
  pyr_reversible_block_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = rc->dtype;
  p.num_terms = 1;
  p.batch = get_int(c, "batch");
  p.dim = get_int(c, "dim");
  set_term(&p.terms[0], &t[0], &t[1], out, (int32_t)get_int(c, "sign"));
  p.num_threads = rc->threads;
  expect_success(c, pyr_reversible_block_cpu(&p));
  out->ref = t[2].ref;
  check(c, rc, out);
  release(t, 3);
}

/* two terms, the backward half-step: x = y - shift and dx = dy + grad */
static void run_reversible_block_bwd(const test_case* c, const run_config* rc) {
  const int in_place = (int)get_int(c, "in_place");
  const char* names[] = {"y", "shift", "dy", "grad", "x", "dx"};
  tensor t[6];
  for (int i = 0; i < 6; ++i) t[i] = make(c, names[i], rc->dtype, rc->spread, i >= 4);
  tensor* x = in_place ? &t[0] : &t[4];
  tensor* dx = in_place ? &t[2] : &t[5];
  pyr_reversible_block_params p;
  memset(&p, 0, sizeof(p));
  p.dtype = rc->dtype;
  p.num_terms = 2;
  p.batch = get_int(c, "batch");
  p.dim = get_int(c, "dim");
  set_term(&p.terms[0], &t[0], &t[1], x, -1);
  set_term(&p.terms[1], &t[2], &t[3], dx, 1);
  p.num_threads = rc->threads;
  expect_success(c, pyr_reversible_block_cpu(&p));
  x->ref = t[4].ref, dx->ref = t[5].ref;
  check(c, rc, x);
  check(c, rc, dx);
  release(t, 6);
}

/* Every entry point the data files name, and the function that runs one of its cases. A new
   kernel adds its cases to tests/native_expected.py and one line here. */
static const struct {
  const char* entry;
  void (*run)(const test_case*, const run_config*);
} RUNNERS[] = {
    {"additive_coupling_fwd", run_additive_coupling_fwd},
    {"additive_coupling_mlp_fwd", run_additive_coupling_mlp_fwd},
    {"additive_coupling_mlp_bwd", run_additive_coupling_mlp_bwd},
    {"causal_conv1d_fwd", run_causal_conv1d_fwd},
    {"causal_conv1d_bwd", run_causal_conv1d_bwd},
    {"masked_conv2d_fwd", run_masked_conv2d_fwd},
    {"masked_conv2d_bwd", run_masked_conv2d_bwd},
    {"wavenet_layer_fwd", run_wavenet_layer_fwd},
    {"wavenet_layer_bwd", run_wavenet_layer_bwd},
    {"wavenet_step", run_wavenet_step},
    {"reversible_block_fwd", run_reversible_block_fwd},
    {"reversible_block_bwd", run_reversible_block_bwd},
};
#define NUM_RUNNERS (sizeof(RUNNERS) / sizeof(RUNNERS[0]))

/* The data files, one per op: a new op appends its name here. */
static const char* OPS[] = {"additive_coupling", "causal_conv1d", "masked_conv2d",
                            "wavenet_layer",     "wavenet_step",  "reversible_block"};

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
    return 2;
  }
  printf("pyreversible %s, CUDA kernels %s\n", pyr_version(), pyr_built_with_cuda() ? "on" : "off");
  const run_config configs[] = {
      {PYR_FLOAT64, 1, 1}, {PYR_FLOAT32, 1, 1}, {PYR_FLOAT64, 2, 3}, {PYR_FLOAT32, 2, 3}};
  int cases = 0, covered[NUM_RUNNERS] = {0};
  for (size_t op = 0; op < sizeof(OPS) / sizeof(OPS[0]); ++op) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.txt", argv[1], OPS[op]);
    FILE* f = fopen(path, "r");
    if (!f) {
      fprintf(stderr, "cannot open %s\n", path);
      return 2;
    }
    test_case* c = (test_case*)xmalloc(sizeof(test_case));
    while (read_case(f, c)) {
      size_t r = 0;
      while (r < NUM_RUNNERS && strcmp(RUNNERS[r].entry, c->entry) != 0) ++r;
      if (r == NUM_RUNNERS) {
        fprintf(stderr, "%s: no runner for entry point %s\n", path, c->entry);
        return 2;
      }
      for (size_t k = 0; k < sizeof(configs) / sizeof(configs[0]); ++k)
        RUNNERS[r].run(c, &configs[k]);
      ++covered[r];
      ++cases;
      free_case(c);
    }
    free(c);
    fclose(f);
  }
  for (size_t r = 0; r < NUM_RUNNERS; ++r) {
    if (!covered[r]) {
      fprintf(stderr, "FAIL no case exercises %s\n", RUNNERS[r].entry);
      ++failures;
    }
  }
  printf("%d cases, %d output comparisons, %d failures\n", cases, checks, failures);
  return failures ? 1 : 0;
}
