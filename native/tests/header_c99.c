/* The public header must compile as strict C99: this file is built with
 * -std=c99 -pedantic -Wall -Wextra -Werror and contains nothing else. */
#include "ferrometal.h"

/* ISO C forbids an empty translation unit. */
typedef int fm_header_c99_check;
