/* Strict schema-driven config loading (see config.h). */
#include "app/config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static nac_status apply_overrides(const nac_cfg_schema *s, int n, char *const *ov, void *out) {
    for (int i = 0; i < n; i++) {
        const char *eq = strchr(ov[i], '=');
        char name[300];
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
        cJSON *v = f->type == NAC_CFG_STR ? cJSON_CreateString(eq + 1) : cJSON_Parse(eq + 1);
        if (!v)
            return nac_error(NAC_ERR_CONFIG, "%s: \"%s\" is not %s", name, eq + 1,
                             type_name(f->type));
        nac_status st = set_field(name, f, v, out);
        cJSON_Delete(v);
        NAC_TRY(st);
    }
    return NAC_OK;
}

nac_status nac_config_parse(const char *text, const char *name, const nac_cfg_schema *schema,
                            int noverrides, char *const *overrides, void *out) {
    if (text) {
        const char *end = NULL;
        cJSON *root = cJSON_ParseWithOpts(text, &end, true);
        if (!root) {
            const char *at = cJSON_GetErrorPtr();
            int line = 1;
            for (const char *p = text; at && p < at; p++) line += *p == '\n';
            return nac_error(NAC_ERR_CONFIG, "%s: malformed JSON near line %d", name, line);
        }
        if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            return nac_error(NAC_ERR_CONFIG, "%s: the top level must be a JSON object", name);
        }
        nac_status s = apply_object(name, schema, root, "", out);
        cJSON_Delete(root);
        NAC_TRY(s);
    }
    return apply_overrides(schema, noverrides, overrides, out);
}

nac_status nac_config_load(const char *path, const nac_cfg_schema *schema, int noverrides,
                           char *const *overrides, void *out) {
    char *text = NULL;
    if (path) {
        nac_status s = nac_read_text_file(path, &text, NULL);
        if (s != NAC_OK) return nac_error_prefix(s, "config ");
    }
    nac_status s = nac_config_parse(text, path ? path : "(defaults)", schema, noverrides,
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
