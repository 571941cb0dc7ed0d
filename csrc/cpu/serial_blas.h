// Single-threaded BLAS inside the kernels' own parallel regions.
//
// The CPU kernels hand whole blocks to the threads and call at::mm on each. PyTorch turns MKL's dynamic thread
// adjustment off (mkl_set_dynamic(false)), so MKL would open a nested team of get_num_threads() threads inside
// every worker: oversubscribed cores and spinning. `SerialBlasGuard` makes MKL single-threaded for the calling
// thread (MKL_Set_Num_Threads_Local, exported by libtorch_cpu when torch uses MKL) and restores it afterwards;
// without MKL it does nothing.
#pragma once

#if defined(__GNUC__) && defined(__linux__)
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
#define GLIP_HAS_MKL_LOCAL_THREADS 1
#endif

namespace glip {

class SerialBlasGuard {
 public:
  SerialBlasGuard() {
#ifdef GLIP_HAS_MKL_LOCAL_THREADS
    if (MKL_Set_Num_Threads_Local != nullptr) {
      previous_ = MKL_Set_Num_Threads_Local(1);
      active_ = true;
    }
#endif
  }
  ~SerialBlasGuard() {
#ifdef GLIP_HAS_MKL_LOCAL_THREADS
    if (active_) MKL_Set_Num_Threads_Local(previous_);
#endif
  }
  SerialBlasGuard(const SerialBlasGuard&) = delete;
  SerialBlasGuard& operator=(const SerialBlasGuard&) = delete;

 private:
  int previous_ = 0;
  bool active_ = false;
};

}  // namespace glip
