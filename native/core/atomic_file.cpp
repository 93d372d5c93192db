#include "atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "error.h"

namespace fm {

namespace {

struct PathParts {
    std::string folder, base;
};

PathParts split(const std::string &path) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return {".", path};
    return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

// ".<base>.tmp-<pid>-<n>": the pid tells whether its writer still lives.
std::string temporary_prefix(const std::string &base) { return "." + base + ".tmp-"; }

void remove_stale_temporaries(const PathParts &parts) {
    DIR *dir = opendir(parts.folder.c_str());
    if (!dir) return;  // the write below reports a missing folder
    const std::string prefix = temporary_prefix(parts.base);
    const long self = long(getpid());
    while (dirent *entry = readdir(dir)) {
        const char *name = entry->d_name;
        if (std::strncmp(name, prefix.c_str(), prefix.size()) != 0) continue;
        char *end = nullptr;
        long pid = std::strtol(name + prefix.size(), &end, 10);
        if (end == name + prefix.size() || *end != '-' || pid <= 0 || pid == self) continue;
        if (kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to judge
        unlink((parts.folder + "/" + name).c_str());
    }
    closedir(dir);
}

[[noreturn]] void io_error(const char *what, const std::string &path) {
    fail(FM_ERR_IO, "cannot ", what, " ", path, ": ", std::strerror(errno));
}

}  // namespace

void write_file_atomically(const std::string &path, const std::vector<unsigned char> &bytes) {
    if (path.empty()) fail(FM_ERR_INVALID_ARGUMENT, "argument 'path' is empty");
    const PathParts parts = split(path);
    if (parts.base.empty()) fail(FM_ERR_INVALID_ARGUMENT, "argument 'path': ", path, " names a folder, not a file");
    remove_stale_temporaries(parts);
    static std::atomic<uint64_t> counter{0};
    const std::string temporary = parts.folder + "/" + temporary_prefix(parts.base) + std::to_string(getpid()) + "-" +
                                  std::to_string(counter++);
    int fd = open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) io_error("create", temporary);
    auto give_up = [&](const char *what, const std::string &target) {
        int saved = errno;
        if (fd >= 0) close(fd);
        unlink(temporary.c_str());
        errno = saved;
        io_error(what, target);
    };
    size_t written = 0;
    while (written < bytes.size()) {
        ssize_t n = write(fd, bytes.data() + written, bytes.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) give_up("write", temporary);
        written += size_t(n);
    }
    if (fsync(fd) != 0) give_up("flush", temporary);
    int closed = close(fd);
    fd = -1;
    if (closed != 0) give_up("close", temporary);
    if (rename(temporary.c_str(), path.c_str()) != 0) give_up("move the file to", path);
    int folder = open(parts.folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (folder < 0) io_error("open the folder", parts.folder);
    int synced = fsync(folder);
    int saved = errno;
    close(folder);
    errno = saved;
    if (synced != 0) io_error("flush the folder", parts.folder);
}

}  // namespace fm
