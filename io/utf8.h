/* UTF-8 checks for strings where they enter the program (config files, overrides, metadata
 * read from files), and escaping for text printed to a terminal: control characters and
 * escape sequences never reach it raw. */
#ifndef NAC_UTF8_H
#define NAC_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Offset of the first byte that is not strict UTF-8 (as Rust's str::from_utf8: no
 * overlongs, surrogates or code points above U+10FFFF), or n if all n bytes are valid. */
size_t nac_utf8_check(const void *s, size_t n);
/* A NUL-terminated string that is valid UTF-8. */
bool nac_utf8_valid(const char *s);
/* Copy s into buf (n bytes, always NUL-terminated, truncated on a character boundary)
 * with control characters (C0, DEL, C1) written as \n, \t, \e, \xNN or \u00NN, backslashes
 * doubled and invalid UTF-8 bytes as \xNN: safe to print to a terminal. Returns buf. */
char *nac_escape_terminal(const char *s, char *buf, size_t n);
/* The length of the longest valid UTF-8 prefix of s of at most max bytes (a string cut
 * in the middle of a character loses the partial character). */
size_t nac_utf8_prefix(const char *s, size_t max);

#endif
