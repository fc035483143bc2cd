# LibTorch from the torch Python package of DHESS_PYTHON: the project's virtual environment
# (scripts/build.sh), or under `pip install .` the environment being installed into. Either way
# dhess runs beside the very torch that exported the user's model.
if(NOT DEFINED DHESS_PYTHON)
  if(Python_EXECUTABLE)  # set by scikit-build-core: the Python that runs pip
    set(default_python ${Python_EXECUTABLE})
  else()
    find_program(default_python NAMES python3 python REQUIRED)
  endif()
  set(DHESS_PYTHON ${default_python} CACHE FILEPATH "Python with torch 2.x (LibTorch, the oracles, the plots)")
endif()

if(NOT Torch_DIR)
  execute_process(COMMAND ${DHESS_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/torch_prefix.py
                  OUTPUT_VARIABLE torch_prefix ERROR_VARIABLE torch_error RESULT_VARIABLE torch_status
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_STRIP_TRAILING_WHITESPACE)
  if(NOT torch_status EQUAL 0)
    message(FATAL_ERROR "dhess: ${torch_error}")
  endif()
  list(PREPEND CMAKE_PREFIX_PATH ${torch_prefix})
endif()

# A CUDA build of torch configures only beside a CUDA toolkit. Torch's FindCUDA takes the toolkit
# from the nvcc first on PATH, which may be a wrapper outside it (/usr/local/bin/nvcc): point it at
# $CUDA_HOME, $CUDA_PATH or /usr/local/cuda where one of them holds the toolkit.
if(NOT DEFINED CUDA_TOOLKIT_ROOT_DIR)
  foreach(root IN ITEMS "$ENV{CUDA_HOME}" "$ENV{CUDA_PATH}" /usr/local/cuda)
    if(root AND EXISTS "${root}/include/cuda_runtime_api.h" AND EXISTS "${root}/bin/nvcc")
      set(CUDA_TOOLKIT_ROOT_DIR "${root}" CACHE PATH "The CUDA toolkit a CUDA build of torch compiles with")
      if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
        set(CMAKE_CUDA_COMPILER "${root}/bin/nvcc" CACHE FILEPATH "")
      endif()
      break()
    endif()
  endforeach()
endif()
# Torch links NVRTC, which a partial toolkit may lack; the nvidia-* wheels beside a pip CUDA torch
# ship the very one it was built with.
if(NOT DEFINED CUDA_nvrtc_LIBRARY AND CUDA_TOOLKIT_ROOT_DIR AND NOT EXISTS "${CUDA_TOOLKIT_ROOT_DIR}/lib64/libnvrtc.so")
  file(GLOB wheel_nvrtc "${torch_prefix}/../../../nvidia/*/lib/libnvrtc.so.[0-9]*")
  if(wheel_nvrtc)
    list(GET wheel_nvrtc 0 wheel_nvrtc)
    set(CUDA_nvrtc_LIBRARY "${wheel_nvrtc}" CACHE FILEPATH "NVRTC for a CUDA build of torch")
  endif()
endif()
find_package(Torch QUIET)
if(NOT Torch_FOUND)
  message(FATAL_ERROR "dhess: LibTorch from ${DHESS_PYTHON} (${torch_prefix}) did not configure. "
                      "A CUDA build of torch needs nvcc: set CUDACXX or put the CUDA toolkit's bin on PATH.")
endif()

# 2.4 is the oldest LibTorch whose C++ API dhess uses (functorch's dynamic layers with an optional
# batch size, c10::WarningUtils, the cuDNN attention switch). Tested: 2.13 (CPU), 2.14 (CUDA build).
set(DHESS_TORCH_MIN 2.4)
if(NOT Torch_VERSION OR Torch_VERSION VERSION_LESS DHESS_TORCH_MIN)
  message(FATAL_ERROR "dhess: needs torch >= ${DHESS_TORCH_MIN}, but ${DHESS_PYTHON} has torch "
                      "'${Torch_VERSION}' (${Torch_DIR}): pip install 'torch>=${DHESS_TORCH_MIN}'")
endif()

if(TORCH_CUDA_LIBRARIES OR CAFFE2_USE_CUDA)
  set(DHESS_WITH_CUDA ON)
  set(DHESS_TORCH_BUILD "LibTorch ${Torch_VERSION} with CUDA ${CUDAToolkit_VERSION}")
else()
  set(DHESS_WITH_CUDA OFF)
  set(DHESS_TORCH_BUILD "LibTorch ${Torch_VERSION}, CPU only")
endif()
message(STATUS "dhess: ${DHESS_TORCH_BUILD} from ${Torch_DIR}")
