/*
 * The checks of the C conformance tests: CHECK counts failures and prints
 * file:line and fm_last_error(); EXPECT(status, call) also requires an
 * error's message to start with the called function's name and a colon.
 * Included by one C file per program (the functions are static).
 */
#ifndef FM_C_TEST_SUPPORT_H
#define FM_C_TEST_SUPPORT_H

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "ferrometal.h"

/* Counted under a lock: the threading tests check from many threads. */
static pthread_mutex_t report_mutex = PTHREAD_MUTEX_INITIALIZER;
static int checks;
static int failures;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        int ok_ = (cond);                                                             \
        pthread_mutex_lock(&report_mutex);                                            \
        checks++;                                                                     \
        if (!ok_) {                                                                   \
            failures++;                                                               \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (fm_last_error: \"%s\")\n",      \
                    __FILE__, __LINE__, #cond, fm_last_error());                      \
        }                                                                             \
        pthread_mutex_unlock(&report_mutex);                                          \
    } while (0)

/* Runs `call`, which must return `want`. When `want` is an error, the
 * message must start with the called function's name and a colon. */
#define EXPECT(want, call) expect_status((call), (want), #call, __FILE__, __LINE__)
#define CHECK_OK(call) EXPECT(FM_OK, call)

static inline void expect_status(fm_status got, fm_status want, const char *call, const char *file,
                                 int line) {
    const char *message = fm_last_error();
    size_t name_length = strcspn(call, "(");
    int named = strncmp(message, call, name_length) == 0 && message[name_length] == ':';
    pthread_mutex_lock(&report_mutex);
    checks++;
    if (got != want) {
        failures++;
        fprintf(stderr, "%s:%d: %s returned %s, expected %s (fm_last_error: \"%s\")\n", file,
                line, call, fm_status_str(got), fm_status_str(want), message);
    } else if (want != FM_OK && !named) {
        failures++;
        fprintf(stderr, "%s:%d: the message of %s does not name it: \"%s\"\n", file, line,
                call, message);
    }
    pthread_mutex_unlock(&report_mutex);
}

static inline int starts_with(const char *text, const char *prefix) {
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

#endif
