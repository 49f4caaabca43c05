# -DANOMALYSD_SANITIZE=address,undefined instruments the project's own targets (LibTorch, OpenCV
# and the other system libraries stay uninstrumented). vptr checks are off: they misfire on the
# RTTI of uninstrumented libraries. Run with ASAN_OPTIONS=detect_leaks=0 — LibTorch's and
# OpenCV's process-lifetime globals read as leaks.
set(ANOMALYSD_SANITIZE "" CACHE STRING "Sanitizers for the project's targets, e.g. address,undefined")

function(anomalysd_sanitize target)
  if(ANOMALYSD_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${ANOMALYSD_SANITIZE} -fno-sanitize=vptr -fno-sanitize-recover=undefined
                                             -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=${ANOMALYSD_SANITIZE} -fno-sanitize=vptr)
  endif()
endfunction()
