#pragma once
// spectrum.png: drawn by the Python package's dhess.plot_spectrum with matplotlib (a small
// script rather than a C++ plotting dependency).
#include <string>
#include <vector>

namespace dhess {

// `arguments` are the script's (--out PNG, --eigenvalues NPY, --density CSV, ...). Returns "" or
// why it was not drawn: a picture is a convenience, its failure costs a warning, not the run.
std::string draw_spectrum(const std::vector<std::string>& arguments);

}  // namespace dhess
