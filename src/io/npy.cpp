#include "dhess/io/npy.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <regex>

#include "dhess/core/errors.hpp"

namespace dhess {

void write_npy(const std::string& path, const double* data, const std::vector<int64_t>& shape) {
  std::string dims;
  int64_t count = 1;
  for (auto d : shape) dims += std::to_string(d) + ",", count *= d;
  if (shape.size() > 1) dims.pop_back();
  std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
  std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  errno = 0;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const unsigned short len = static_cast<unsigned short>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(len & 0xff));
  out.put(static_cast<char>(len >> 8));
  out << header;
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(double)));
  out.close();  // a network file system may report a full disk only here
  if (!out)
    throw ResourceError("cannot write '" + path +
                        "': " + (errno ? std::strerror(errno) : "disk full or not writable?"));
}

NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("cannot open npy file '" + path + "'");
  char magic[8];
  if (!in.read(magic, 8) || std::string(magic, 6) != "\x93NUMPY") throw InputError("'" + path + "' is not an npy file");
  std::size_t len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::size_t>(b[3]) << 24);
  }
  if (!in || len > (1 << 20)) throw InputError("npy file '" + path + "' has a broken header");
  std::string header(len, ' ');
  in.read(header.data(), static_cast<std::streamsize>(len));
  std::smatch m;
  static const std::regex descr(R"('descr':\s*'([<|>]?[fi][48])')"), order(R"('fortran_order':\s*(True|False))"),
      shape(R"('shape':\s*\(([0-9,\s]*)\))");
  if (!in || !std::regex_search(header, m, descr)) throw InputError("npy file '" + path + "' has no supported dtype");
  std::string type = m[1];
  if (!std::regex_search(header, m, order) || m[1] == "True")
    throw InputError("npy file '" + path + "' is not in C order");
  if (!std::regex_search(header, m, shape)) throw InputError("npy file '" + path + "' has no shape");
  NpyArray a;
  int64_t count = 1;
  std::string dims = m[1];
  static const std::regex number(R"(\d+)");
  if (type[0] == '>') throw InputError("npy file '" + path + "' is big-endian");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it) {
    if (it->str().size() > 12) throw InputError("npy file '" + path + "' has an impossible shape");
    a.shape.push_back(std::stoll(it->str()));
    count *= a.shape.back();
    if (count < 0 || count > (int64_t(1) << 34)) throw InputError("npy file '" + path + "' is too large");
  }
  // The header's shape must match the bytes that follow before anything is
  // allocated: a corrupt shape must not become a huge allocation (found by fuzzing).
  const std::size_t element = static_cast<std::size_t>(type.back() - '0');
  const auto data_start = in.tellg();
  in.seekg(0, std::ios::end);
  const auto data_bytes = static_cast<int64_t>(in.tellg() - data_start);
  in.seekg(data_start);
  if (data_bytes != count * static_cast<int64_t>(element))
    throw InputError("npy file '" + path + "' holds " + std::to_string(data_bytes) +
                     " data bytes but its shape needs " + std::to_string(count * static_cast<int64_t>(element)));
  a.data.resize(static_cast<std::size_t>(count));
  auto read_as = [&](auto sample) {
    using V = decltype(sample);
    std::vector<V> raw(static_cast<std::size_t>(count));
    if (!in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(count * sizeof(V))))
      throw InputError("npy file '" + path + "' is truncated");
    for (std::size_t i = 0; i < raw.size(); ++i) a.data[i] = static_cast<double>(raw[i]);
  };
  if (type.back() == '8' && type[type.size() - 2] == 'f')
    read_as(double{});
  else if (type.back() == '4' && type[type.size() - 2] == 'f')
    read_as(float{});
  else if (type.back() == '8')
    read_as(int64_t{});
  else
    read_as(int32_t{});
  return a;
}

}  // namespace dhess
