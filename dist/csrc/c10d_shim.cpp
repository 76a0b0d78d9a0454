// A small C ABI over PyTorch's own c10d engine (TCPStore + PrefixStore + ProcessGroupGloo,
// and ProcessGroupNCCL when built with COUPLET_NCCL). Every C++ exception is caught here
// and returned as a heap string the caller frees with couplet_dist_free_error; tensors
// come in as the at::Tensor* that tch::Tensor wraps.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef COUPLET_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

struct CoupletGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

static char *error_string(const char *what) {
  size_t n = std::strlen(what);
  char *out = static_cast<char *>(std::malloc(n + 1));
  if (out != nullptr) std::memcpy(out, what, n + 1);
  return out;
}

#define COUPLET_TRY(err, fail)                          \
  catch (const std::exception &e) {                     \
    *(err) = error_string(e.what());                    \
    return fail;                                        \
  }                                                     \
  catch (...) {                                         \
    *(err) = error_string("unknown C++ exception");     \
    return fail;                                        \
  }

extern "C" {

void couplet_dist_free_error(char *err) { std::free(err); }

// backend: 0 = gloo, 1 = nccl. host_store: this process hosts the TCPStore (rank 0 unless
// an agent such as torchrun's elastic agent already does).
CoupletGroup *couplet_dist_new(int backend, const char *host, int port, int rank,
                               int world, int host_store, long timeout_ms,
                               char **err) {
  try {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = host_store != 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = false;
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    auto store = c10::make_intrusive<c10d::PrefixStore>("couplet", tcp);
    c10::intrusive_ptr<c10d::Backend> pg;
    if (backend == 0) {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
    } else {
#ifdef COUPLET_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
#else
      throw std::runtime_error(
          "this build has no NCCL backend: rebuild with the `nccl` cargo feature");
#endif
    }
    return new CoupletGroup{tcp, pg};
  }
  COUPLET_TRY(err, nullptr)
}

void couplet_dist_free(CoupletGroup *g) { delete g; }

// op: 0 = sum, 1 = max, 2 = min. In place.
int couplet_dist_all_reduce(CoupletGroup *g, at::Tensor *t, int op, char **err) {
  try {
    std::vector<at::Tensor> v{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = op == 1 ? c10d::ReduceOp::MAX
                         : (op == 2 ? c10d::ReduceOp::MIN : c10d::ReduceOp::SUM);
    g->backend->allreduce(v, o)->wait();
    return 0;
  }
  COUPLET_TRY(err, -1)
}

int couplet_dist_broadcast(CoupletGroup *g, at::Tensor *t, int root, char **err) {
  try {
    std::vector<at::Tensor> v{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    g->backend->broadcast(v, o)->wait();
    return 0;
  }
  COUPLET_TRY(err, -1)
}

// Sums `t` over ranks into rank `root`'s `t` (the others' `t` is left unspecified).
int couplet_dist_reduce(CoupletGroup *g, at::Tensor *t, int root, char **err) {
  try {
    std::vector<at::Tensor> v{*t};
    c10d::ReduceOptions o;
    o.rootRank = root;
    o.reduceOp = c10d::ReduceOp::SUM;
    g->backend->reduce(v, o)->wait();
    return 0;
  }
  COUPLET_TRY(err, -1)
}

// Gathers `input` (same shape on every rank) into `output` ([world, ...input shape]).
int couplet_dist_all_gather(CoupletGroup *g, at::Tensor *output, at::Tensor *input,
                            char **err) {
  try {
    int world = g->backend->getSize();
    std::vector<std::vector<at::Tensor>> out(1);
    for (int i = 0; i < world; ++i) out[0].push_back(output->select(0, i));
    std::vector<at::Tensor> in{*input};
    g->backend->allgather(out, in)->wait();
    return 0;
  }
  COUPLET_TRY(err, -1)
}

// Drops `t`'s accumulated gradient (ZeRO-2 frees a bucket's gradients once they are reduced
// into their owner; the next backward allocates fresh ones). tch has no way to undefine it.
void couplet_dist_free_grad(at::Tensor *t) { t->mutable_grad().reset(); }

int couplet_dist_barrier(CoupletGroup *g, char **err) {
  try {
    g->backend->barrier()->wait();
    return 0;
  }
  COUPLET_TRY(err, -1)
}

}  // extern "C"
