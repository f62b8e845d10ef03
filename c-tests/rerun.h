/* Running a test's binary again with PFN_* settings forced. The library reads its PFN_*
 * environment variables once, when it is loaded, so a test that forces a path does it in a
 * new process. Needs _GNU_SOURCE (or POSIX) before the first include. */
#ifndef PFN_RERUN_H
#define PFN_RERUN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Runs this binary with arguments `args` (NULL-terminated, after argv[0]) in the current
 * environment minus every PFN_* variable but PFN_TEST_*, plus each "NAME=value" of `set`
 * (NULL-terminated; may be NULL). Returns the exit status, 128 + the signal that ended it,
 * or -1 when it could not be started. */
static inline int check_rerun(const char *const *set, const char *const *args)
{
    static char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = 0;
    const char *argv[16] = {self};
    int argc = 1;
    while (args && args[argc - 1] && argc < 15) {
        argv[argc] = args[argc - 1];
        argc++;
    }
    argv[argc] = NULL;
    size_t count = 0;
    while (environ[count])
        count++;
    const char **envp = calloc(count + 16, sizeof *envp);
    if (!envp)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < count; i++)
        if (strncmp(environ[i], "PFN_", 4) != 0 || strncmp(environ[i], "PFN_TEST_", 9) == 0)
            envp[k++] = environ[i];
    for (size_t i = 0; set && set[i] && i < 15; i++)
        envp[k++] = set[i];
    envp[k] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        execve(self, (char *const *)argv, (char *const *)envp);
        _exit(127);
    }
    free(envp);
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#endif
