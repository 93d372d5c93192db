// Files that are never seen half-written: what a crash (kill -9, power
// loss) leaves at a path is its old complete contents or its new ones.
#pragma once

#include <string>
#include <vector>

namespace fm {

// Writes `bytes` to `path` through a temporary file of a name no other
// thread or process uses (in the same folder), fsynced, renamed over
// `path`, after which the folder is fsynced so the rename itself lasts.
// Temporaries of `path` left by processes that died while saving are
// removed first. Threads and processes writing one path at once each
// rename a whole file: the last rename wins, and nothing interleaves.
// Throws FM_ERR_IO naming the path and the failing call; on error the
// temporary is removed and `path` is untouched.
void write_file_atomically(const std::string &path, const std::vector<unsigned char> &bytes);

}  // namespace fm
