# Use ccache when it is installed. PCH builds need relaxed sloppiness, otherwise ccache
# refuses to cache any translation unit that uses the precompiled header.
find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      ${CCACHE_PROGRAM})
  message(STATUS "anomalysd: using ccache (${CCACHE_PROGRAM})")
endif()
