/* Strict schema-driven config loading (see config.h). */
#include "app/config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/utf8.h"

nac_status nac_read_text_file(const char *path, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return nac_error(errno == ENOENT ? NAC_ERR_NOINPUT : NAC_ERR_IO, "%s: %s", path,
                         strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
        }
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        cap *= 2;
        char *nb = realloc(buf, cap);
        if (!nb) free(buf);
        buf = nb;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return nac_error(NAC_ERR_IO, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return NAC_OK;
}

static const nac_cfg_field *find_field(const nac_cfg_schema *s, const char *key) {
    for (int i = 0; i < s->nfields; i++)
        if (strcmp(s->fields[i].key, key) == 0) return &s->fields[i];
    return NULL;
}

static bool is_prefix(const nac_cfg_schema *s, const char *prefix) {
    size_t n = strlen(prefix);
    for (int i = 0; i < s->nfields; i++)
        if (strncmp(s->fields[i].key, prefix, n) == 0 && s->fields[i].key[n] == '.') return true;
    return false;
}

static const char *type_name(nac_cfg_type t) {
    switch (t) {
    case NAC_CFG_INT: return "an integer";
    case NAC_CFG_FLOAT: return "a number";
    case NAC_CFG_BOOL: return "true or false";
    case NAC_CFG_STR: return "a string";
    }
    return "?";
}

static nac_status range_error(const char *name, const nac_cfg_field *f, double v) {
    return nac_error(NAC_ERR_CONFIG, "%s: \"%s\" = %g is out of range %c%g, %g%c", name, f->key,
                     v, f->excl_min ? '(' : '[', f->min, f->max, f->excl_max ? ')' : ']');
}

static nac_status set_field(const char *name, const nac_cfg_field *f, const cJSON *v, void *out) {
    char *dst = (char *)out + f->offset;
    switch (f->type) {
    case NAC_CFG_INT:
    case NAC_CFG_FLOAT: {
        if (!cJSON_IsNumber(v))
            return nac_error(NAC_ERR_CONFIG, "%s: \"%s\" must be %s", name, f->key,
                             type_name(f->type));
        double d = v->valuedouble;
        if (f->type == NAC_CFG_INT && (d != floor(d) || fabs(d) > 2147483647.0))
            return nac_error(NAC_ERR_CONFIG, "%s: \"%s\" must be an integer, got %g", name,
                             f->key, d);
        if (!isfinite(d) || d < f->min || d > f->max || (f->excl_min && d == f->min) ||
            (f->excl_max && d == f->max))
            return range_error(name, f, d);
        if (f->type == NAC_CFG_INT) *(int *)dst = (int)d;
        else *(double *)dst = d;
        return NAC_OK;
    }
    case NAC_CFG_BOOL:
        if (!cJSON_IsBool(v))
            return nac_error(NAC_ERR_CONFIG, "%s: \"%s\" must be true or false", name, f->key);
        *(bool *)dst = cJSON_IsTrue(v);
        return NAC_OK;
    case NAC_CFG_STR: {
        if (!cJSON_IsString(v))
            return nac_error(NAC_ERR_CONFIG, "%s: \"%s\" must be a string", name, f->key);
        const char *s = v->valuestring;
        if (strlen(s) >= f->size)
            return nac_error(NAC_ERR_CONFIG, "%s: \"%s\" is longer than %zu characters", name,
                             f->key, f->size - 1);
        if (f->choices) {
            bool ok = false;
            size_t n = strlen(s);
            for (const char *c = f->choices; *c;) {
                const char *e = strchr(c, '|');
                size_t k = e ? (size_t)(e - c) : strlen(c);
                if (k == n && strncmp(c, s, n) == 0) ok = true;
                c += k + (e ? 1 : 0);
            }
            if (!ok)
                return nac_error(NAC_ERR_CONFIG, "%s: \"%s\" = \"%s\" is not one of %s", name,
                                 f->key, s, f->choices);
        }
        memcpy(dst, s, strlen(s) + 1);
        return NAC_OK;
    }
    }
    return NAC_OK;
}

/* Walk the JSON object: every leaf must be a known key. */
static nac_status apply_object(const char *name, const nac_cfg_schema *s, const cJSON *obj,
                               const char *prefix, void *out) {
    for (const cJSON *c = obj->child; c; c = c->next) {
        char key[256];
        int k = snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", c->string);
        if (k < 0 || (size_t)k >= sizeof key)
            return nac_error(NAC_ERR_CONFIG, "%s: key \"%s\" is too long", name, c->string);
        for (const cJSON *d = c->next; d; d = d->next)
            if (strcmp(d->string, c->string) == 0)
                return nac_error(NAC_ERR_CONFIG, "%s: key \"%s\" appears twice", name, key);
        const nac_cfg_field *f = find_field(s, key);
        if (f) {
            NAC_TRY(set_field(name, f, c, out));
        } else if (is_prefix(s, key)) {
            if (!cJSON_IsObject(c))
                return nac_error(NAC_ERR_CONFIG, "%s: \"%s\" must be an object", name, key);
            NAC_TRY(apply_object(name, s, c, key, out));
        } else {
            return nac_error(NAC_ERR_CONFIG, "%s: unknown key \"%s\"", name, key);
        }
    }
    return NAC_OK;
}

/* Where in the text a byte offset is: 1-based line and column (in characters). */
static void line_col(const char *text, size_t at, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < at; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\n') {
            ++*line;
            *col = 1;
        } else if ((c & 0xc0) != 0x80) {
            ++*col;
        }
    }
}

/* One character of a JSON text: true where c is outside every string and is not the quote
 * that opens one; *str and *esc carry the string state from character to character. */
static bool json_structural(char c, bool *str, bool *esc) {
    if (*str) {
        if (*esc) *esc = false;
        else if (c == '\\') *esc = true;
        else if (c == '"') *str = false;
        return false;
    }
    if (c == '"') *str = true;
    return !*str;
}

/* Brackets left open (or a string left unterminated) at the end of the text: cJSON's error
 * position is then somewhere inside, but the cause is the end. */
static bool json_ends_early(const char *text, size_t n, char *buf, size_t bn) {
    int depth = 0;
    bool str = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (!json_structural(c, &str, &esc)) {
            continue;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    if (str) snprintf(buf, bn, "the text ends inside a string (a missing '\"')");
    else if (depth > 0) snprintf(buf, bn, "the text ends before %d closing '}' or ']'", depth);
    return str || depth > 0;
}

/* The first ',' followed (after white space) by '}' or ']' outside strings: the offset of
 * that bracket, or n if none. cJSON's error position lands near it, not on it. */
static size_t trailing_comma(const char *text, size_t n) {
    bool str = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (json_structural(c, &str, &esc) && c == ',') {
            size_t j = i + 1;
            while (j < n && strchr(" \t\r\n", text[j])) j++;
            if (j < n && (text[j] == '}' || text[j] == ']')) return j;
        }
    }
    return n;
}

/* Why cJSON stopped at `at` (its error position), in words; false if only "unexpected". */
static bool json_cause(const char *text, size_t n, size_t at, char *buf, size_t bn) {
    size_t prev = at;
    while (prev > 0 && strchr(" \t\r\n", text[prev - 1])) prev--;
    if (at >= n) {
        snprintf(buf, bn, "the text ends early (a missing '}' or ']', or an unterminated string)");
    } else if ((text[at] == '}' || text[at] == ']') && prev > 0 && text[prev - 1] == ',') {
        snprintf(buf, bn, "a trailing comma before '%c'", text[at]);
    } else if (text[at] == '\'') {
        snprintf(buf, bn, "a single quote (JSON strings use double quotes)");
    } else if ((text[at] == '/' && at + 1 < n && (text[at + 1] == '/' || text[at + 1] == '*')) ||
               (at > 0 && text[at - 1] == '/' && (text[at] == '/' || text[at] == '*'))) {
        snprintf(buf, bn, "a comment (JSON has none)");
    } else {
        char c[16];
        unsigned char u = (unsigned char)text[at];
        if (u >= 0x21 && u < 0x7f)
            snprintf(c, sizeof c, "'%c'", u);
        else
            snprintf(c, sizeof c, "byte 0x%02x", u);
        snprintf(buf, bn, "unexpected %s", c);
        return false;
    }
    return true;
}

/* The value of an override for a number or bool: exactly one JSON scalar, nothing after it
 * ("5abc", "1,2", "0x10", "trueish" are refused, not read as 5, 1, 0, true). */
static cJSON *parse_scalar(const char *text) {
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithOpts(text, &end, true);
    if (v && (cJSON_IsArray(v) || cJSON_IsObject(v) || cJSON_IsString(v) || cJSON_IsNull(v))) {
        cJSON_Delete(v);
        v = NULL;
    }
    return v;
}

static nac_status apply_overrides(const nac_cfg_schema *s, int n, char *const *ov, void *out) {
    for (int i = 0; i < n; i++) {
        const char *eq = strchr(ov[i], '=');
        char name[300];
        size_t bad = nac_utf8_check(ov[i], strlen(ov[i]));
        if (bad < strlen(ov[i])) {
            int k = eq && (size_t)(eq - ov[i]) <= bad ? (int)(eq - ov[i]) : 0;
            return nac_error(NAC_ERR_CONFIG, "override %d (\"%.*s=...\"): not valid UTF-8 (byte %zu is 0x%02x)",
                             i + 1, k, ov[i], bad, (unsigned char)ov[i][bad]);
        }
        snprintf(name, sizeof name, "override \"%s\"", ov[i]);
        if (!eq || eq == ov[i])
            return nac_error(NAC_ERR_USAGE, "%s: expected key=value", name);
        char key[256];
        size_t k = (size_t)(eq - ov[i]);
        if (k >= sizeof key) return nac_error(NAC_ERR_USAGE, "%s: key too long", name);
        memcpy(key, ov[i], k);
        key[k] = 0;
        const nac_cfg_field *f = find_field(s, key);
        if (!f) return nac_error(NAC_ERR_CONFIG, "%s: unknown key \"%s\"", name, key);
        /* an empty string can mean something ("model.encoder=": random init); an empty
         * number or bool cannot (run.name is checked where the folder is made) */
        if (!eq[1] && f->type != NAC_CFG_STR)
            return nac_error(NAC_ERR_CONFIG, "%s: empty value (\"%s\" must be %s)", name, key,
                             type_name(f->type));
        cJSON *v = f->type == NAC_CFG_STR ? cJSON_CreateString(eq + 1) : parse_scalar(eq + 1);
        if (!v)
            return nac_error(NAC_ERR_CONFIG, "%s: \"%s\" is not %s", name, eq + 1,
                             type_name(f->type));
        nac_status st = set_field(name, f, v, out);
        cJSON_Delete(v);
        NAC_TRY(st);
    }
    return NAC_OK;
}

nac_status nac_config_parse_n(const char *text, size_t n, const char *name,
                              const nac_cfg_schema *schema, int noverrides,
                              char *const *overrides, void *out) {
    if (text) {
        const char *nul = memchr(text, 0, n);
        int line, col;
        if (nul) {
            line_col(text, (size_t)(nul - text), &line, &col);
            return nac_error(NAC_ERR_CONFIG, "%s: a NUL byte at line %d, column %d (byte %zu): not a JSON text file",
                             name, line, col, (size_t)(nul - text));
        }
        size_t bad = nac_utf8_check(text, n);
        if (bad < n) {
            line_col(text, bad, &line, &col);
            return nac_error(NAC_ERR_CONFIG, "%s: not valid UTF-8 at line %d, column %d (byte %zu is 0x%02x)",
                             name, line, col, bad, (unsigned char)text[bad]);
        }
        const char *end = NULL;
        cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
        size_t at = root && end ? (size_t)(end - text) : n;
        if (root)
            while (at < n && strchr(" \t\r\n", text[at])) at++;
        if (!root || at < n) {
            char cause[96];
            if (!root) {
                const char *e = cJSON_GetErrorPtr();
                at = e && e >= text && e <= text + n ? (size_t)(e - text) : n;
                if (at > 0 && at <= n && text[at - 1] == '\'') at--; /* cJSON stops past it */
                size_t tc = trailing_comma(text, n);
                if (tc <= at) at = tc;
                if (!json_cause(text, n, at, cause, sizeof cause) &&
                    json_ends_early(text, n, cause, sizeof cause))
                    at = n;
            } else {
                snprintf(cause, sizeof cause, "text after the end of the JSON value");
            }
            cJSON_Delete(root);
            line_col(text, at, &line, &col);
            return nac_error(NAC_ERR_CONFIG, "%s: malformed JSON near line %d, column %d: %s", name,
                             line, col, cause);
        }
        if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            return nac_error(NAC_ERR_CONFIG, "%s: the top level must be a JSON object", name);
        }
        nac_status s = apply_object(name, schema, root, "", out);
        cJSON_Delete(root);
        NAC_TRY(s);
    }
    NAC_TRY(apply_overrides(schema, noverrides, overrides, out));
    if (schema->check) {
        nac_status s = schema->check(out);
        if (s != NAC_OK) return nac_error_prefix(s, "%s: ", name);
    }
    return NAC_OK;
}

nac_status nac_config_parse(const char *text, const char *name, const nac_cfg_schema *schema,
                            int noverrides, char *const *overrides, void *out) {
    return nac_config_parse_n(text, text ? strlen(text) : 0, name, schema, noverrides, overrides,
                              out);
}

nac_status nac_config_load(const char *path, const nac_cfg_schema *schema, int noverrides,
                           char *const *overrides, void *out) {
    char *text = NULL;
    size_t n = 0;
    if (path) {
        nac_status s = nac_read_text_file(path, &text, &n);
        if (s != NAC_OK) return nac_error_prefix(s, "config ");
    }
    nac_status s = nac_config_parse_n(text, n, path ? path : "(defaults)", schema, noverrides,
                                      overrides, out);
    free(text);
    return s;
}

cJSON *nac_config_to_json(const nac_cfg_schema *schema, const void *cfg) {
    cJSON *root = cJSON_CreateObject();
    for (int i = 0; root && i < schema->nfields; i++) {
        const nac_cfg_field *f = &schema->fields[i];
        cJSON *parent = root;
        char key[256];
        snprintf(key, sizeof key, "%s", f->key);
        char *seg = key;
        for (char *dot; (dot = strchr(seg, '.')); seg = dot + 1) {
            *dot = 0;
            cJSON *child = cJSON_GetObjectItemCaseSensitive(parent, seg);
            if (!child) child = cJSON_AddObjectToObject(parent, seg);
            parent = child;
        }
        const char *src = (const char *)cfg + f->offset;
        switch (f->type) {
        case NAC_CFG_INT: cJSON_AddNumberToObject(parent, seg, *(const int *)src); break;
        case NAC_CFG_FLOAT: cJSON_AddNumberToObject(parent, seg, *(const double *)src); break;
        case NAC_CFG_BOOL: cJSON_AddBoolToObject(parent, seg, *(const bool *)src); break;
        case NAC_CFG_STR: cJSON_AddStringToObject(parent, seg, src); break;
        }
    }
    return root;
}

void nac_config_print_help(const nac_cfg_schema *schema, const void *defaults) {
    for (int i = 0; i < schema->nfields; i++) {
        const nac_cfg_field *f = &schema->fields[i];
        const char *src = (const char *)defaults + f->offset;
        char def[300];
        switch (f->type) {
        case NAC_CFG_INT: snprintf(def, sizeof def, "%d", *(const int *)src); break;
        case NAC_CFG_FLOAT: snprintf(def, sizeof def, "%g", *(const double *)src); break;
        case NAC_CFG_BOOL: snprintf(def, sizeof def, "%s", *(const bool *)src ? "true" : "false"); break;
        case NAC_CFG_STR: snprintf(def, sizeof def, "\"%s\"", src); break;
        }
        printf("  %-28s %s (default %s)%s%s\n", f->key, f->help, def,
               f->choices ? "; one of " : "", f->choices ? f->choices : "");
    }
}
