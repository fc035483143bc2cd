#include "dhess/io/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "dhess/core/collective.hpp"
#include "dhess/core/errors.hpp"

namespace dhess {
namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'D', 'H', 'E', 'S', 'S', 'P', 'N', '1'};

uint64_t fnv1a(const void* data, std::size_t size, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

struct PanelHeader {
  char magic[8];
  int64_t n, j0, j1;
  int32_t element_bytes;
  int32_t reserved;
  uint64_t checksum;  // FNV-1a of the payload
};

void write_all(int fd, const void* data, std::size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t w = ::write(fd, p, size);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int err = errno;
      ::close(fd);
      throw ResourceError("cannot write checkpoint file '" + path + "': " + std::strerror(err));
    }
    p += w;
    size -= static_cast<std::size_t>(w);
  }
}

// Written to a temporary name, flushed to disk, then renamed: a crash leaves
// either the old state or the whole new file.
void write_atomically(const std::string& path, const void* header, std::size_t header_size, const void* payload,
                      std::size_t payload_size) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw ResourceError("cannot create checkpoint file '" + tmp + "': " + std::strerror(errno));
  write_all(fd, header, header_size, tmp);
  write_all(fd, payload, payload_size, tmp);
  if (::fsync(fd) != 0) {
    ::close(fd);
    throw ResourceError("cannot flush checkpoint file '" + tmp + "' (disk full?)");
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw ResourceError("cannot rename checkpoint file '" + tmp + "': " + std::strerror(errno));
  int dir = ::open(fs::path(path).parent_path().c_str(), O_RDONLY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace

std::string file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  uint64_t h = 1469598103934665603ull;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h = fnv1a(buf.data(), static_cast<std::size_t>(in.gcount()), h);
  }
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}

Checkpoint::Checkpoint(const std::string& dir, const nlohmann::json& identity, bool resume, MPI_Comm comm)
    : dir_(dir), comm_(comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  int64_t info[2] = {identity.value("panel_width", int64_t(0)), 0};
  run_collectively(comm, [&] {
    if (rank != 0) return;
    std::error_code ec;
    const auto meta = fs::path(dir) / "checkpoint.json";
    int64_t panels = 0;
    if (fs::is_directory(dir, ec))
      for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.path().extension() == ".panel" || e.path().extension() == ".record") ++panels;
    if (fs::exists(meta, ec)) {
      if (!resume)
        throw UsageError("checkpoint directory '" + dir + "' already holds " + std::to_string(panels) +
                         " panel(s) of an earlier run; pass --resume to continue it, or remove the directory");
      nlohmann::json saved;
      try {
        std::ifstream in(meta);
        saved = nlohmann::json::parse(in);
      } catch (const std::exception&) {
        throw InputError("checkpoint metadata '" + meta.string() + "' is not readable JSON");
      }
      for (const auto& [key, value] : identity.items()) {
        if (key == "panel_width") continue;
        if (saved.contains(key) && saved[key] == value) continue;
        if (key == "model" || key == "data")  // hashes: say which file, not the numbers
          throw InputError("checkpoint '" + dir + "' was written for a different problem: the " + key +
                           " file is not the one it was computed from");
        throw InputError("checkpoint '" + dir + "' was written for a different problem: " + key + " is " +
                         (saved.contains(key) ? saved[key].dump() : std::string("missing")) + " there but " +
                         value.dump() + " now");
      }
      info[0] = saved.value("panel_width", info[0]);
      info[1] = panels;
      return;
    }
    fs::create_directories(dir, ec);
    if (ec) throw ResourceError("cannot create checkpoint directory '" + dir + "': " + ec.message());
    const std::string text = identity.dump(2) + "\n";
    write_atomically(meta.string(), text.data(), text.size(), nullptr, 0);
  });
  MPI_Bcast(info, 2, MPI_INT64_T, 0, comm);
  panel_width_ = info[0];
  panels_found_ = info[1];
}

std::string Checkpoint::panel_path(int64_t j0, int64_t j1) const {
  return (fs::path(dir_) / ("columns_" + std::to_string(j0) + "_" + std::to_string(j1) + ".panel")).string();
}

template <typename T>
bool Checkpoint::load(int64_t j0, int64_t j1, int64_t n, T* panel) const {
  return read_panel(panel_path(j0, j1), j0, j1, n, panel);
}

template <typename T>
bool read_panel(const std::string& path, int64_t j0, int64_t j1, int64_t n, T* panel, const std::string& remedy) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  PanelHeader h{};
  const std::size_t bytes = static_cast<std::size_t>(n * (j1 - j0)) * sizeof(T);
  if (!in.read(reinterpret_cast<char*>(&h), sizeof h) || std::memcmp(h.magic, kMagic, 8) != 0 || h.n != n ||
      h.j0 != j0 || h.j1 != j1 || h.element_bytes != static_cast<int32_t>(sizeof(T)))
    throw InputError("checkpoint panel '" + path + "' does not belong to this problem or is damaged");
  if (!in.read(reinterpret_cast<char*>(panel), static_cast<std::streamsize>(bytes)) ||
      fnv1a(panel, bytes) != h.checksum)
    throw InputError("checkpoint panel '" + path + "' is truncated or corrupt; " + remedy);
  return true;
}

template <typename T>
void Checkpoint::save(int64_t j0, int64_t j1, int64_t n, const T* panel) const {
  PanelHeader h{};
  std::memcpy(h.magic, kMagic, 8);
  h.n = n;
  h.j0 = j0;
  h.j1 = j1;
  h.element_bytes = sizeof(T);
  const std::size_t bytes = static_cast<std::size_t>(n * (j1 - j0)) * sizeof(T);
  h.checksum = fnv1a(panel, bytes);
  write_atomically(panel_path(j0, j1), &h, sizeof h, panel, bytes);
}

void Checkpoint::save_record(const std::string& name, const nlohmann::json& record) const {
  int rank = 0;
  MPI_Comm_rank(comm_, &rank);
  run_collectively(comm_, [&] {
    if (rank != 0) return;
    const std::string text = record.dump() + "\n";
    write_atomically((fs::path(dir_) / (name + ".record")).string(), text.data(), text.size(), nullptr, 0);
  });
}

bool Checkpoint::load_record(const std::string& name, nlohmann::json& record) const {
  int rank = 0;
  MPI_Comm_rank(comm_, &rank);
  std::string text;
  run_collectively(comm_, [&] {
    if (rank != 0) return;
    const auto path = fs::path(dir_) / (name + ".record");
    std::ifstream in(path);
    if (!in) return;
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (!nlohmann::json::accept(text)) throw InputError("checkpoint record '" + path.string() + "' is damaged");
  });
  int64_t size = static_cast<int64_t>(text.size());
  MPI_Bcast(&size, 1, MPI_INT64_T, 0, comm_);
  if (size == 0) return false;
  text.resize(static_cast<std::size_t>(size));
  MPI_Bcast(text.data(), static_cast<int>(size), MPI_CHAR, 0, comm_);
  record = nlohmann::json::parse(text);
  return true;
}

void Checkpoint::save_array(const std::string& name, int64_t n, int64_t k, const double* data) const {
  int rank = 0;
  MPI_Comm_rank(comm_, &rank);
  run_collectively(comm_, [&] {
    if (rank != 0) return;
    PanelHeader h{};
    std::memcpy(h.magic, kMagic, 8);
    h.n = n;
    h.j1 = k;
    h.element_bytes = sizeof(double);
    const std::size_t bytes = static_cast<std::size_t>(n * k) * sizeof(double);
    h.checksum = fnv1a(data, bytes);
    write_atomically((fs::path(dir_) / (name + ".panel")).string(), &h, sizeof h, data, bytes);
  });
}

bool Checkpoint::load_array(const std::string& name, int64_t n, int64_t k, double* data) const {
  int rank = 0;
  MPI_Comm_rank(comm_, &rank);
  int found = 0;
  run_collectively(comm_, [&] {
    if (rank == 0) found = read_panel<double>((fs::path(dir_) / (name + ".panel")).string(), 0, k, n, data) ? 1 : 0;
  });
  MPI_Bcast(&found, 1, MPI_INT, 0, comm_);
  return found != 0;
}

std::string Checkpoint::share_path() const {
  int rank = 0;
  MPI_Comm_rank(comm_, &rank);
  return (fs::path(dir_) / ("hessian_rank" + std::to_string(rank) + ".share")).string();
}

// A share is stored as a panel of lld rows and the local columns: exactly the local storage.
template <typename T>
void Checkpoint::save_hessian(const BlockCyclicMatrix<T>& h, const nlohmann::json& record) const {
  run_collectively(comm_, [&] {
    PanelHeader header{};
    std::memcpy(header.magic, kMagic, 8);
    header.n = h.lld();
    header.j1 = h.local_cols();
    header.element_bytes = sizeof(T);
    header.checksum = fnv1a(h.data(), h.local_bytes());
    write_atomically(share_path(), &header, sizeof header, h.data(), h.local_bytes());
  });
  save_record("hessian", record);
}

template <typename T>
bool Checkpoint::load_hessian(BlockCyclicMatrix<T>& h, const nlohmann::json& distribution,
                              nlohmann::json& record) const {
  nlohmann::json saved;
  if (!load_record("hessian", saved) || saved.value("distribution", nlohmann::json()) != distribution) return false;
  run_collectively(comm_, [&] {
    const std::string remedy =
        "remove " + (fs::path(dir_) / "hessian.record").string() + " to reassemble H from the panels";
    if (!read_panel<T>(share_path(), 0, h.local_cols(), h.lld(), h.data(), remedy))
      throw InputError("checkpoint '" + dir_ + "' lacks " + share_path() + "; " + remedy);
  });
  record = saved;
  return true;
}

template void Checkpoint::save_hessian<double>(const BlockCyclicMatrix<double>&, const nlohmann::json&) const;
template void Checkpoint::save_hessian<float>(const BlockCyclicMatrix<float>&, const nlohmann::json&) const;
template bool Checkpoint::load_hessian<double>(BlockCyclicMatrix<double>&, const nlohmann::json&,
                                               nlohmann::json&) const;
template bool Checkpoint::load_hessian<float>(BlockCyclicMatrix<float>&, const nlohmann::json&, nlohmann::json&) const;
template bool read_panel<double>(const std::string&, int64_t, int64_t, int64_t, double*, const std::string&);
template bool read_panel<float>(const std::string&, int64_t, int64_t, int64_t, float*, const std::string&);
template bool Checkpoint::load<double>(int64_t, int64_t, int64_t, double*) const;
template bool Checkpoint::load<float>(int64_t, int64_t, int64_t, float*) const;
template void Checkpoint::save<double>(int64_t, int64_t, int64_t, const double*) const;
template void Checkpoint::save<float>(int64_t, int64_t, int64_t, const float*) const;

}  // namespace dhess
