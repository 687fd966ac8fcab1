/* UTF-8 validation and terminal escaping (see utf8.h). */
#include "io/utf8.h"

#include <stdio.h>
#include <string.h>

/* Length of the valid UTF-8 character at s (n bytes left), or 0 if it is invalid. */
static size_t char_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k < len; k++)
        if ((s[k] & 0xc0) != 0x80) return 0;
    return len;
}

size_t nac_utf8_check(const void *p, size_t n) {
    const unsigned char *s = p;
    size_t i = 0;
    while (i < n) {
        size_t k = s[i] < 0x80 ? 1 : char_len(s + i, n - i);
        if (!k) return i;
        i += k;
    }
    return n;
}

bool nac_utf8_valid(const char *s) {
    size_t n = strlen(s);
    return nac_utf8_check(s, n) == n;
}

size_t nac_utf8_prefix(const char *s, size_t max) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i = 0;
    while (i < n) {
        size_t k = char_len(u + i, n - i);
        if (!k || i + k > max) break; /* an invalid or cut character ends the prefix */
        i += k;
    }
    return i;
}

char *nac_escape_terminal(const char *s, char *buf, size_t n) {
    if (n == 0) return buf;
    const unsigned char *u = (const unsigned char *)s;
    size_t len = strlen(s), i = 0, o = 0;
    while (i < len) {
        char tmp[8];
        size_t k = char_len(u + i, len - i), t;
        unsigned c = u[i];
        if (k == 0) {
            t = (size_t)snprintf(tmp, sizeof tmp, "\\x%02x", c);
            k = 1;
        } else if (c == '\\') {
            t = (size_t)snprintf(tmp, sizeof tmp, "\\\\");
        } else if (c < 0x20 || c == 0x7f) {
            t = (size_t)(c == '\n'   ? snprintf(tmp, sizeof tmp, "\\n")
                         : c == '\t' ? snprintf(tmp, sizeof tmp, "\\t")
                         : c == 0x1b ? snprintf(tmp, sizeof tmp, "\\e")
                                     : snprintf(tmp, sizeof tmp, "\\x%02x", c));
        } else if (k == 2 && c == 0xc2 && u[i + 1] < 0xa0) { /* C1 controls U+0080..U+009F */
            t = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", u[i + 1]);
        } else {
            t = k;
            memcpy(tmp, u + i, k);
        }
        if (o + t + 1 > n) break;
        memcpy(buf + o, tmp, t);
        o += t;
        i += k;
    }
    buf[o] = 0;
    return buf;
}
