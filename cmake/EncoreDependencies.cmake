# Third-party libraries, all from Debian packages (scripts/setup.sh installs them).
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(dnnl 2.6 CONFIG REQUIRED)          # libdnnl-dev: oneDNN v2 API
find_package(fmt CONFIG REQUIRED)               # libfmt-dev
find_package(nlohmann_json 3 CONFIG REQUIRED)   # nlohmann-json3-dev
find_package(Eigen3 3.3 CONFIG REQUIRED)        # libeigen3-dev
find_path(ENCORE_STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb REQUIRED)  # libstb-dev (header only use)
