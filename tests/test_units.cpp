// Logic without torch or a Hessian: index maps, grids, parsing, placement.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "dhess/app/parse.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/core/layout.hpp"
#include "dhess/core/memory.hpp"
#include "dhess/core/placement.hpp"
#include "dhess/dist/block_cyclic.hpp"
#include "dhess/dist/process_grid.hpp"
#include "dhess/io/npy.hpp"
#include "dhess/linalg/eigensolver.hpp"
#include "dhess/report/summary.hpp"

namespace dhess {
namespace {

TEST(CyclicAxis, GlobalLocalMapsAreInverseAndCountsMatchNumroc) {
  for (int procs : {1, 2, 3, 4})
    for (int block : {1, 5, 64})
      for (int source : {0, procs - 1})
        for (int64_t n : {int64_t(1), int64_t(7), int64_t(343), int64_t(1000)}) {
          CyclicAxis a{n, block, procs, source};
          std::map<int, int64_t> count;
          for (int64_t i = 0; i < n; ++i) {
            int p = a.owner(i);
            // Brute-force ownership: block b = i / block lives on (b + source) % procs.
            ASSERT_EQ(p, static_cast<int>((i / block + source) % procs));
            ASSERT_EQ(a.local(i), count[p]) << "local index is the count of earlier owned entries";
            ASSERT_EQ(a.global(a.local(i), p), i);
            ++count[p];
          }
          for (int p = 0; p < procs; ++p) ASSERT_EQ(a.local_extent(p), count[p]);
        }
}

TEST(ProcessGrid, SquareGridIsNearSquare) {
  EXPECT_EQ(square_grid(1), std::make_pair(1, 1));
  EXPECT_EQ(square_grid(2), std::make_pair(1, 2));
  EXPECT_EQ(square_grid(4), std::make_pair(2, 2));
  EXPECT_EQ(square_grid(6), std::make_pair(2, 3));
  EXPECT_EQ(square_grid(7), std::make_pair(1, 7));
  EXPECT_EQ(square_grid(16), std::make_pair(4, 4));
}

TEST(ProcessGrid, GridFlagMustMatchRankCount) {
  EXPECT_EQ(parse_grid("2x2", 4), std::make_pair(2, 2));
  EXPECT_EQ(parse_grid("4X1", 4), std::make_pair(4, 1));
  EXPECT_THROW(parse_grid("2x3", 4), UsageError);
  EXPECT_THROW(parse_grid("two", 4), UsageError);
  EXPECT_THROW(parse_grid("0x4", 0), UsageError);
}

TEST(EigenRequest, ParsesTheDocumentedForms) {
  EXPECT_EQ(parse_eigen_request("values").kind, EigenRequest::Kind::values);
  EXPECT_EQ(parse_eigen_request("all").kind, EigenRequest::Kind::all);
  EXPECT_EQ(parse_eigen_request("none").kind, EigenRequest::Kind::none);
  auto top = parse_eigen_request("top:12");
  EXPECT_EQ(top.kind, EigenRequest::Kind::top);
  EXPECT_EQ(top.k, 12);
  EXPECT_EQ(parse_eigen_request("bottom:3").count(100), 3);
  for (const char* bad : {"top:0", "top:", "largest", "top:-1", ""})
    EXPECT_THROW(parse_eigen_request(bad), UsageError) << bad;
}

TEST(Solver, AutomaticChoiceFollowsTheRequest) {
  const Solver fast = elpa_available() ? Solver::elpa : Solver::pdsyevr;
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("values"), 64, 1, 2, 5000), fast);
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("values"), 48, 1, 2, 5000), Solver::pdsyevr);
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("all"), 64, 1, 2, 5000),
            elpa_available() ? Solver::elpa : Solver::pdsyevd);
  // One process: LAPACK for all pairs and index ranges, ELPA 2-stage still for values.
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("all"), 64, 1, 1, 5000), Solver::lapack);
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("bottom:2"), 64, 1, 1, 5000), Solver::lapack);
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("values"), 64, 1, 1, 5000),
            fast == Solver::elpa ? Solver::elpa : Solver::lapack);
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("top:3"), 64, 1, 2, 5000), Solver::pdsyevr);
  EXPECT_EQ(choose_solver(Solver::pdsyevd, parse_eigen_request("all"), 64, 1, 2, 5000), Solver::pdsyevd);
  EXPECT_TRUE(elpa_accepts(64, 2, 2, 200));
  EXPECT_FALSE(elpa_accepts(48, 2, 2, 200));  // not a power of two
  EXPECT_FALSE(elpa_accepts(64, 1, 4, 200));  // a process column without a block
  EXPECT_THROW(parse_solver("magma"), UsageError);
  EXPECT_EQ(parse_solver("lapack"), Solver::lapack);
  EXPECT_EQ(parse_solver("lowrank"), Solver::lowrank);
}

// Where the rank-revealing sketch runs, and its bound: n / 2 before --solver auto's full solver
// (float64, no null-space vectors asked for, n >= 2,048), shrunk by 7/8 steps until its 6 k n / P + 2 k^2
// fit in H's share or the solver's workspace (ELPA: 3.2 shares for values, 2 with vectors, + 8 n);
// n / 4 for --solver lowrank.
TEST(Solver, LowRankSketchBound) {
  const auto values = parse_eigen_request("values"), top = parse_eigen_request("top:3");
  auto bound = [](Solver wanted, const EigenRequest& request, Dtype dtype, int64_t n, int ranks = 2) {
    return lowrank_sketch_columns(wanted, Solver::elpa, request, dtype, n, 64, 1, ranks);
  };
  EXPECT_EQ(bound(Solver::automatic, values, Dtype::float64, 2560), 980);  // 1,280 -> 1,120 -> 980
  EXPECT_EQ(bound(Solver::automatic, top, Dtype::float64, 2560), 655);
  EXPECT_EQ(bound(Solver::automatic, values, Dtype::float64, 2047), 0);
  EXPECT_EQ(bound(Solver::automatic, values, Dtype::float32, 2560), 0);
  EXPECT_EQ(bound(Solver::automatic, parse_eigen_request("all"), Dtype::float64, 2560), 0);
  EXPECT_EQ(bound(Solver::elpa, values, Dtype::float64, 2560), 0);
  EXPECT_EQ(bound(Solver::lowrank, values, Dtype::float64, 2560), 640);
  EXPECT_EQ(bound(Solver::lowrank, values, Dtype::float64, 343), 256);
  // n = 6.4 M on 2^20 ranks: n / 2 = 3.2 M vectors would hold a 2.5 TB B = QᵀHQ on every rank;
  // the bound keeps the sketch within ELPA's workspace (3.2 shares of 6,272 x 6,272, plus 8 n).
  const int64_t n = 6400325,
                k = lowrank_sketch_columns(Solver::automatic, Solver::elpa, values, Dtype::float64, n, 64, 1024, 1024);
  EXPECT_GT(k, 1000);
  EXPECT_LE(2 * k * k + 6 * k * ((n + (1 << 20) - 1) >> 20), 16 * 6272 * 6272 / 5 + 8 * n);
  EXPECT_THROW(check_solver(Solver::lowrank, parse_eigen_request("all"), 64, 1, 2, 5000), UsageError);
  EXPECT_THROW(resolve_solver(Solver::lowrank, values, 64, 1, 2, 5000, Dtype::float32), UsageError);
}

TEST(Layout, OffsetsFollowInsertionOrder) {
  ParameterLayout l;
  l.add("c1.weight", {32, 1, 3, 3});
  l.add("c1.bias", {32});
  l.add("f2.weight", {5, 4608});
  l.add("f2.bias", {5});
  EXPECT_EQ(l.n(), 288 + 32 + 23040 + 5);
  EXPECT_EQ(l.parameters()[2].offset, 320);
  EXPECT_EQ(l.parameters()[3].offset, 320 + 23040);
  EXPECT_EQ(l.owner_of(0), 0u);
  EXPECT_EQ(l.owner_of(319), 1u);
  EXPECT_EQ(l.owner_of(320), 2u);
  EXPECT_EQ(l.owner_of(l.n() - 1), 3u);
  EXPECT_EQ(l.index_of("f2.bias"), 3u);
  EXPECT_THROW(l.index_of("f3.bias"), UsageError);
}

TEST(Placement, LocalRankPrefersSlurmThenOpenMpiThenSharedMemory) {
  std::map<std::string, std::string> env;
  EnvLookup lookup = [&](const char* k) -> const char* {
    auto it = env.find(k);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  EXPECT_EQ(local_rank_from(lookup, 5), 5);
  env["OMPI_COMM_WORLD_LOCAL_RANK"] = "3";
  EXPECT_EQ(local_rank_from(lookup, 5), 3);
  env["SLURM_LOCALID"] = "1";
  EXPECT_EQ(local_rank_from(lookup, 5), 1);
  env["SLURM_LOCALID"] = "garbage";
  EXPECT_EQ(local_rank_from(lookup, 5), 3);
}

TEST(Placement, GpuIsLocalRankModuloVisibleDevices) {
  EXPECT_EQ(gpu_for_rank(0, 4), 0);
  EXPECT_EQ(gpu_for_rank(5, 4), 1);
  EXPECT_EQ(gpu_for_rank(3, 1), 0);  // SLURM bound one device to the task
  EXPECT_EQ(gpu_for_rank(2, 0), -1);
}

TEST(Placement, ThreadsFromFlagThenSlurmThenCoresPerRank) {
  std::map<std::string, std::string> env;
  EnvLookup lookup = [&](const char* k) -> const char* {
    auto it = env.find(k);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  EXPECT_EQ(threads_per_rank(0, lookup, 16, 4), 4);
  EXPECT_EQ(threads_per_rank(0, lookup, 2, 4), 1);
  env["SLURM_CPUS_PER_TASK"] = "8";
  EXPECT_EQ(threads_per_rank(0, lookup, 16, 4), 8);
  EXPECT_EQ(threads_per_rank(3, lookup, 16, 4), 3);
}

TEST(Npy, RoundTripKeepsShapeAndValues) {
  const std::string path = ::testing::TempDir() + "/dhess_npy_test.npy";
  std::vector<double> v = {1.5, -2.25, 3e-300, 4e300, 0.0, -0.0};
  write_npy(path, v.data(), {2, 3});
  NpyArray a = read_npy(path);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.data, v);
  std::remove(path.c_str());
}

TEST(Summary, EigenCountsUseTheStatedTolerance) {
  EigenStats s = eigen_stats({-2.0, -1e-9, 0.0, 1e-9, 3.0, 10.0}, 1e-8);
  EXPECT_DOUBLE_EQ(s.tolerance, 1e-7);
  EXPECT_EQ(s.negative, 1);
  EXPECT_EQ(s.zero, 3);
  EXPECT_EQ(s.positive, 2);
  EXPECT_EQ(s.largest, 10.0);
  EXPECT_EQ(s.smallest, -2.0);
}

// The limits tests/limits/test_int32_limits.py finds by probing ScaLAPACK itself.
TEST(Int32Limits, MatchWhereScaLapackBreaks) {
  const EigenRequest values = parse_eigen_request("values"), all = parse_eigen_request("all");
  EXPECT_EQ(int32_limit(Solver::pdsyevr, values, 46340, 64, 1, 1), "");
  EXPECT_NE(int32_limit(Solver::pdsyevr, values, 46341, 64, 1, 1), "");
  EXPECT_NE(int32_limit(Solver::elpa, values, 46341, 64, 1, 1), "");
  EXPECT_EQ(int32_limit(Solver::pdsyevr, values, 46341, 64, 1, 2), "");
  EXPECT_EQ(int32_limit(Solver::pdsyevd, all, 32760, 64, 1, 1), "");
  EXPECT_NE(int32_limit(Solver::pdsyevd, all, 32800, 64, 1, 1).find("workspace"), std::string::npos);
  EXPECT_NE(int32_limit(Solver::pdsyevr, all, 33000, 64, 1, 1), "");
  EXPECT_EQ(int32_limit(Solver::elpa, all, 40000, 64, 1, 1), "");  // ELPA allocates its own workspace
  EXPECT_EQ(int32_limit(Solver::lapack, values, 46340, 64, 1, 1), "");
  EXPECT_NE(int32_limit(Solver::lapack, all, 32768, 64, 1, 1), "");
}

TEST(Int32Limits, AutoTakesASolverWithinThemOrNamesTheRanks) {
  const EigenRequest all = parse_eigen_request("all"), values = parse_eigen_request("values");
  EXPECT_EQ(resolve_solver(Solver::automatic, all, 64, 1, 1, 36325, Dtype::float64),
            elpa_available() ? Solver::elpa : Solver::lapack);
  EXPECT_EQ(int32_refusal(Solver::pdsyevr, values, 52165, 64, 1, 2), "");
  EXPECT_NE(int32_refusal(Solver::pdsyevr, values, 52165, 64, 1, 1).find("use at least 2 ranks (grid 1x2)"),
            std::string::npos);
}

// A cgroup tree and /proc files written by the test: v1, v2, and SLURM's variables.
class MemoryBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/dhess_memory_" + std::to_string(::getpid());
    write("meminfo", "MemTotal: 16000000 kB\nMemAvailable: 8000000 kB\n");
    sources_.proc_cgroup = root_ + "/cgroup";
    sources_.cgroup_root = root_ + "/sys";
    sources_.meminfo = root_ + "/meminfo";
    sources_.env = [this](const char* name) -> const char* {
      auto it = env_.find(name);
      return it == env_.end() ? nullptr : it->second.c_str();
    };
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  void write(const std::string& file, const std::string& text) {
    const std::filesystem::path path = root_ + "/" + file;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
  std::string root_;
  MemorySources sources_;
  std::map<std::string, std::string> env_;
};

TEST_F(MemoryBudgetTest, NodeMemoryIsSharedByTheRanksOnIt) {
  write("cgroup", "0::/\n");
  const MemoryBudget b = memory_budget(2, sources_);
  EXPECT_DOUBLE_EQ(b.bytes, 8000000.0 * 1024 / 2);
  EXPECT_NE(b.source.find("MemAvailable"), std::string::npos);
}

TEST_F(MemoryBudgetTest, CgroupV2LimitOfTheJobNotTheRoot) {
  write("cgroup", "0::/slurm/job_7/step_0\n");
  write("sys/memory.max", "max\n");
  write("sys/slurm/job_7/memory.max", "2000000000\n");
  write("sys/slurm/job_7/step_0/memory.max", "max\n");
  const MemoryBudget b = memory_budget(2, sources_);
  EXPECT_DOUBLE_EQ(b.bytes, 1e9);
  EXPECT_NE(b.source.find("job_7/memory.max"), std::string::npos) << b.source;
}

TEST_F(MemoryBudgetTest, CgroupV1MemoryHierarchy) {
  write("cgroup", "5:cpu,cpuacct:/x\n4:memory:/slurm/uid_0/job_3\n");
  write("sys/memory/slurm/uid_0/job_3/memory.limit_in_bytes", "3000000000\n");
  write("sys/memory/memory.limit_in_bytes", "9223372036854771712\n");
  EXPECT_DOUBLE_EQ(memory_budget(1, sources_).bytes, 3e9);
}

TEST_F(MemoryBudgetTest, SlurmMemPerNodeAndPerCpu) {
  write("cgroup", "0::/\n");
  env_["SLURM_MEM_PER_NODE"] = "600";
  EXPECT_DOUBLE_EQ(memory_budget(1, sources_).bytes, 600.0 * 1024 * 1024);
  env_.erase("SLURM_MEM_PER_NODE");
  env_["SLURM_MEM_PER_CPU"] = "100";
  env_["SLURM_CPUS_PER_TASK"] = "2";
  const MemoryBudget b = memory_budget(4, sources_);  // per task: not shared by the node's ranks
  EXPECT_DOUBLE_EQ(b.bytes, 200.0 * 1024 * 1024);
  EXPECT_NE(b.source.find("SLURM_MEM_PER_CPU = 100"), std::string::npos) << b.source;
}

}  // namespace
}  // namespace dhess
