// Logic without torch or a Hessian: index maps, grids, parsing, placement.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <string>

#include "dhess/app/parse.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/core/layout.hpp"
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

}  // namespace
}  // namespace dhess
