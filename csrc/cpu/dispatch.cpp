// Run-time choice of the tiled kernel's instruction set. Each variant of syrk_tiled.cpp is
// compiled with its own flags (CMakeLists.txt); this file is compiled for baseline x86-64 and
// asks the CPU (cpuid) and the OS (XCR0: which register states it saves on a context switch)
// what can run, then routes calls to the best variant, or to one chosen by name
// (rf_cpu_select_isa, from RANKME_FAST_CPU_ISA in the Python layer).
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define RF_X86_64 1
#endif
#if defined(__linux__) && defined(RF_X86_64)
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "kernels.h"

namespace rankme_fast {
namespace {

struct Features {
  bool sse2 = false, avx = false, fma = false, f16c = false, movbe = false, avx2 = false, bmi1 = false,
       bmi2 = false, lzcnt = false, avx512f = false, avx512dq = false, avx512cd = false, avx512bw = false,
       avx512vl = false, avx512_vnni = false, avx512_bf16 = false, avx512_fp16 = false, amx_tile = false,
       amx_bf16 = false, amx_int8 = false;
  bool os_avx = false, os_avx512 = false, os_amx = false;  // register state saved by the OS
  bool amx_permitted = false;                              // Linux granted tile data to this process
  bool tiles_emulated = false;                             // RANKME_FAST_TILES=emulated: software tiles
  std::string names;                                       // space-separated, what was found
};

#ifdef RF_X86_64
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

// Linux keeps AMX tile data off until a process asks (arch_prctl ARCH_REQ_XCOMP_PERM for
// XFEATURE_XTILEDATA); a tile instruction before that faults.
bool request_amx_permission() {
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
#endif

Features detect() {
  Features f;
#ifdef RF_X86_64
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.sse2 = d & (1u << 26);
  f.fma = c & (1u << 12);
  f.movbe = c & (1u << 22);
  const bool osxsave = c & (1u << 27);
  f.avx = c & (1u << 28);
  f.f16c = c & (1u << 29);
  const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  f.os_avx = (xcr0 & 0x6) == 0x6;                // SSE and AVX state
  f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM0-15 upper halves, ZMM16-31
  f.os_amx = (xcr0 & 0x60000) == 0x60000;        // XTILECFG and XTILEDATA
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.bmi1 = b & (1u << 3);
    f.avx2 = b & (1u << 5);
    f.bmi2 = b & (1u << 8);
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512cd = b & (1u << 28);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512_vnni = c & (1u << 11);
    f.amx_bf16 = d & (1u << 22);
    f.avx512_fp16 = d & (1u << 23);
    f.amx_tile = d & (1u << 24);
    f.amx_int8 = d & (1u << 25);
    if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = a & (1u << 5);
  }
  if (__get_cpuid(0x80000001, &a, &b, &c, &d)) f.lzcnt = c & (1u << 5);
  if (f.amx_tile && f.os_amx) f.amx_permitted = request_amx_permission();
#endif
#ifdef RF_HAVE_AMX
  const char* tiles = std::getenv("RANKME_FAST_TILES");
  f.tiles_emulated = tiles && std::strcmp(tiles, "emulated") == 0;
  isa_amx::use_emulated_tiles(f.tiles_emulated);
#endif
  const std::pair<const char*, bool> named[] = {
      {"sse2", f.sse2}, {"avx", f.avx}, {"fma", f.fma}, {"f16c", f.f16c}, {"movbe", f.movbe}, {"avx2", f.avx2},
      {"bmi1", f.bmi1}, {"bmi2", f.bmi2}, {"lzcnt", f.lzcnt}, {"avx512f", f.avx512f}, {"avx512dq", f.avx512dq},
      {"avx512cd", f.avx512cd}, {"avx512bw", f.avx512bw}, {"avx512vl", f.avx512vl},
      {"avx512_vnni", f.avx512_vnni}, {"avx512_bf16", f.avx512_bf16}, {"avx512_fp16", f.avx512_fp16},
      {"amx_tile", f.amx_tile}, {"amx_bf16", f.amx_bf16}, {"amx_int8", f.amx_int8}, {"os_avx", f.os_avx},
      {"os_avx512", f.os_avx512}, {"os_amx", f.os_amx}, {"amx_permitted", f.amx_permitted}};
  for (const auto& [name, present] : named)
    if (present) f.names += (f.names.empty() ? "" : " ") + std::string(name);
  return f;
}

const Features& features() {
  static const Features found = detect();
  return found;
}

// What each variant's compiler flags let it use (CMakeLists.txt): x86-64-v3 for avx2,
// x86-64-v4 for avx512, plus AVX512_BF16.
bool can_run_avx2(const Features& f) {
  return f.os_avx && f.avx && f.avx2 && f.fma && f.f16c && f.bmi1 && f.bmi2 && f.lzcnt && f.movbe;
}
bool can_run_avx512(const Features& f) {
  return can_run_avx2(f) && f.os_avx512 && f.avx512f && f.avx512dq && f.avx512cd && f.avx512bw && f.avx512vl;
}
bool can_run_avx512bf16(const Features& f) { return can_run_avx512(f) && f.avx512_bf16; }

// Why this process may not run tiles ("" when cpuid, XCR0 and Linux all allow them).
std::string tiles_missing(const Features& f) {
  if (!f.amx_tile || !f.amx_bf16) return "the CPU has no AMX-BF16 tile units";
  if (!f.os_amx) return "the OS does not save the tile registers (XCR0)";
  if (!f.amx_permitted) return "Linux did not grant this process tile data (arch_prctl)";
  if (!can_run_avx512bf16(f)) return "the CPU lacks the AVX-512 BF16 the rest of the variant uses";
  return "";
}

#if defined(RF_HAVE_AMX) && defined(__linux__)
// Runs the tile kernel's self-test in a forked child, so a kernel that faults on hardware the
// tests never ran on (an unexpected tile configuration, say) kills the child, not the caller:
// "passed" or what went wrong. The child restores the default fault handlers (Python's
// faulthandler would print from them), writes no core file and gives up after 30 s.
std::string tile_self_test_in_child() {
  const pid_t pid = fork();
  if (pid < 0) return "could not fork for the tile self-test";
  if (pid == 0) {
    for (int sig : {SIGILL, SIGSEGV, SIGBUS, SIGFPE, SIGABRT}) signal(sig, SIG_DFL);
    const rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    alarm(30);
    _exit(isa_amx::tile_self_test());
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return "lost the tile self-test's child";
  if (WIFSIGNALED(status))
    return std::string("the tile self-test died of signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  if (WEXITSTATUS(status) != 0) return "the tile self-test's sums were off";
  return "passed";
}

const std::string& tile_check_result() {
  static const std::string result = tile_self_test_in_child();
  return result;
}
#endif

// The amx variant: tiles allowed, and their self-test passed; or software tiles (tests).
bool can_run_amx(const Features& f) {
#if defined(RF_HAVE_AMX) && defined(__linux__)
  if (f.tiles_emulated) return can_run_avx512bf16(f);
  return tiles_missing(f).empty() && tile_check_result() == "passed";
#else
  (void)f;
  return false;
#endif
}

struct Variant {
  const char* name;
  bool (*can_run)(const Features&);
  bool measured_only;  // never the default: taken only where the fast-mode dispatch measures it faster
  void (*update)(const rf_matrix_view&, const double*, double*, int32_t);
  const char* (*simd)();
  double (*peak)(int32_t, double);
};

bool always(const Features&) { return true; }
// Ascending: each variant can run wherever the next one can.
const Variant kVariants[] = {
    {"baseline", always, false, isa_baseline::syrk_tiled_update, isa_baseline::tiled_simd, isa_baseline::peak_gflops},
#ifdef RF_X86_64
    {"avx2", can_run_avx2, false, isa_avx2::syrk_tiled_update, isa_avx2::tiled_simd, isa_avx2::peak_gflops},
    {"avx512", can_run_avx512, false, isa_avx512::syrk_tiled_update, isa_avx512::tiled_simd, isa_avx512::peak_gflops},
    {"avx512bf16", can_run_avx512bf16, false, isa_avx512bf16::syrk_tiled_update, isa_avx512bf16::tiled_simd,
     isa_avx512bf16::peak_gflops},
#endif
#ifdef RF_HAVE_AMX
    {"amx", can_run_amx, true, isa_amx::syrk_tiled_update, isa_amx::tiled_simd, isa_amx::peak_gflops},
#endif
};
constexpr int kVariantCount = sizeof(kVariants) / sizeof(kVariants[0]);

int best_variant() {
  int best = 0;
  for (int i = 0; i < kVariantCount; ++i)
    if (!kVariants[i].measured_only && kVariants[i].can_run(features())) best = i;
  return best;
}

std::atomic<int> chosen{-1};

const Variant& current() {
  int index = chosen.load(std::memory_order_acquire);
  if (index < 0) {
    index = best_variant();
    chosen.store(index, std::memory_order_release);
  }
  return kVariants[index];
}

}  // namespace

void syrk_tiled_update(const rf_matrix_view& z, const double* shift, double* gram, int32_t precision) {
  current().update(z, shift, gram, precision);
}

void syrk_tiled_update_variant(int index, const rf_matrix_view& z, const double* shift, double* gram,
                               int32_t precision) {
  kVariants[index].update(z, shift, gram, precision);
}

namespace {
constexpr int kDtypes = 4, kPrecisions = 2, kWidthClasses = 4;
std::atomic<int> routes[kDtypes][kPrecisions][kWidthClasses];  // zero-initialised: set at first use below
std::atomic<bool> routes_ready{false};

void reset_routes() {
  for (auto& per_dtype : routes)
    for (auto& per_precision : per_dtype)
      for (auto& route : per_precision) route.store(RF_ROUTE_UNSET, std::memory_order_relaxed);
  routes_ready.store(true, std::memory_order_release);
}
}  // namespace

const char* tiled_simd() { return current().simd(); }

}  // namespace rankme_fast

using rankme_fast::kVariantCount;
using rankme_fast::kVariants;

extern "C" {

const char* rf_cpu_features(void) { return rankme_fast::features().names.c_str(); }

int rf_cpu_isa_count(void) { return kVariantCount; }

const char* rf_cpu_isa_name(int index) { return index >= 0 && index < kVariantCount ? kVariants[index].name : ""; }

int rf_cpu_isa_runs_here(int index) {
  return index >= 0 && index < kVariantCount && kVariants[index].can_run(rankme_fast::features());
}

const char* rf_cpu_isa(void) { return rankme_fast::current().name; }

int rf_cpu_isa_index_in_use(void) { return static_cast<int>(&rankme_fast::current() - kVariants); }

int rf_cpu_select_isa(const char* name, char* err, size_t err_len) {
  for (int i = 0; i < kVariantCount; ++i) {
    if (std::strcmp(kVariants[i].name, name) != 0) continue;
    if (!kVariants[i].can_run(rankme_fast::features())) {
      std::snprintf(err, err_len, "this CPU (or its OS) cannot run the %s kernels; it has: %s", name,
                    rankme_fast::features().names.c_str());
      return 1;
    }
    rankme_fast::chosen.store(i, std::memory_order_release);
    return 0;
  }
  std::string known;
  for (int i = 0; i < kVariantCount; ++i) known += (i ? ", " : "") + std::string(kVariants[i].name);
  std::snprintf(err, err_len, "unknown instruction set '%s'; built: %s", name, known.c_str());
  return 1;
}

const char* rf_cpu_tile_check(int force) {
  static const std::string missing = "not run: " + rankme_fast::tiles_missing(rankme_fast::features());
#if defined(RF_HAVE_AMX) && defined(__linux__)
  static const std::string emulated = "not run: RANKME_FAST_TILES=emulated (the tile instructions run in software)";
  if (rankme_fast::features().tiles_emulated && !force) return emulated.c_str();
  if (force || missing == "not run: ") return rankme_fast::tile_check_result().c_str();
#else
  (void)force;
  static const std::string not_built = "not run: this build has no tile kernel";
  if (missing == "not run: ") return not_built.c_str();
#endif
  return missing.c_str();
}

double rf_cpu_isa_peak_gflops(int index, int32_t kind, double seconds) {
  if (!rf_cpu_isa_runs_here(index)) return -1.0;
  return kVariants[index].peak(kind, seconds);
}

int rf_cpu_width_class(int64_t cols) { return cols <= 64 ? 0 : cols <= 256 ? 1 : cols <= 1024 ? 2 : 3; }

int rf_cpu_set_route(int32_t dtype, int32_t precision, int width_class, int route) {
  if (dtype < 0 || dtype >= rankme_fast::kDtypes || precision < 0 || precision >= rankme_fast::kPrecisions ||
      width_class < 0 || width_class >= rankme_fast::kWidthClasses)
    return 1;
  if (route != RF_ROUTE_UNSET && route != RF_ROUTE_BLAS && !rf_cpu_isa_runs_here(route)) return 1;
  if (route == RF_ROUTE_BLAS && !rf_cpu_has_blas()) return 1;
  if (!rankme_fast::routes_ready.load(std::memory_order_acquire)) rankme_fast::reset_routes();
  rankme_fast::routes[dtype][precision][width_class].store(route, std::memory_order_release);
  return 0;
}

int rf_cpu_route(int32_t dtype, int32_t precision, int64_t cols) {
  if (!rankme_fast::routes_ready.load(std::memory_order_acquire)) return RF_ROUTE_UNSET;
  if (dtype < 0 || dtype >= rankme_fast::kDtypes || precision < 0 || precision >= rankme_fast::kPrecisions)
    return RF_ROUTE_UNSET;
  return rankme_fast::routes[dtype][precision][rf_cpu_width_class(cols)].load(std::memory_order_acquire);
}

}  // extern "C"
