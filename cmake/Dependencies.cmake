# All dependencies come from Debian 12's apt (scripts/install-deps.sh). Torch may instead be
# an official LibTorch 2.x (CUDA) build: -DCMAKE_PREFIX_PATH=/path/to/libtorch.
find_package(Torch REQUIRED)
find_package(OpenCV REQUIRED COMPONENTS core imgproc imgcodecs)
find_package(CLI11 REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json 3.9 REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(Threads REQUIRED)

# yaml-cpp 0.7 exports a plain `yaml-cpp` target; newer releases add `yaml-cpp::yaml-cpp`.
if(TARGET yaml-cpp::yaml-cpp)
  set(ANOMALYSD_YAML_TARGET yaml-cpp::yaml-cpp)
else()
  set(ANOMALYSD_YAML_TARGET yaml-cpp)
endif()

message(STATUS "anomalysd: LibTorch ${Torch_VERSION} (${TORCH_INSTALL_PREFIX})")
