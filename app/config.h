/* JSON configs -> C structs, validated strictly against a schema: an unknown key, a
 * wrong type or a value out of range is an error naming the key and the file.
 * `key=value` overrides (dotted keys) are applied before validation. The resolved
 * config (every field, defaults included) can be written back as JSON. */
#ifndef NAC_APP_CONFIG_H
#define NAC_APP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "backend/status.h"

typedef enum nac_cfg_type { NAC_CFG_INT, NAC_CFG_FLOAT, NAC_CFG_BOOL, NAC_CFG_STR } nac_cfg_type;

typedef struct nac_cfg_field {
    const char *key;     /* dotted path: "train.epochs" */
    nac_cfg_type type;
    size_t offset;       /* into the target struct */
    size_t size;         /* NAC_CFG_STR: buffer size */
    double min, max;     /* numbers: inclusive range (use excl_* for open ends) */
    bool excl_min, excl_max;
    const char *choices; /* NAC_CFG_STR: "a|b|c" or NULL for free text */
    const char *help;
} nac_cfg_field;

typedef struct nac_cfg_schema {
    const nac_cfg_field *fields;
    int nfields;
    /* Rules between fields (NULL: none), run after every key and override is applied, so a
     * config is checked whole before anything is created from it. */
    nac_status (*check)(const void *cfg);
} nac_cfg_schema;

#define NAC_CFG_INT_F(st, k, member, lo, hi, h) \
    {k, NAC_CFG_INT, offsetof(st, member), sizeof(int), lo, hi, false, false, NULL, h}
#define NAC_CFG_FLOAT_F(st, k, member, lo, hi, xlo, xhi, h) \
    {k, NAC_CFG_FLOAT, offsetof(st, member), sizeof(double), lo, hi, xlo, xhi, NULL, h}
#define NAC_CFG_BOOL_F(st, k, member, h) \
    {k, NAC_CFG_BOOL, offsetof(st, member), sizeof(bool), 0, 1, false, false, NULL, h}
#define NAC_CFG_STR_F(st, k, member, choices, h)                                           \
    {k, NAC_CFG_STR, offsetof(st, member), sizeof(((st *)0)->member), 0, 0, false, false, \
     choices, h}

/* Apply the JSON file at `path` (NULL: defaults only) and the overrides onto `out`,
 * which holds the defaults on entry. On error `out` may be partly written. */
nac_status nac_config_load(const char *path, const nac_cfg_schema *schema, int noverrides,
                           char *const *overrides, void *out);
/* Parse JSON text (for tests and embedded configs); `name` names it in messages. */
nac_status nac_config_parse(const char *text, const char *name, const nac_cfg_schema *schema,
                            int noverrides, char *const *overrides, void *out);
/* The same for n bytes of text, which must be UTF-8 without NUL bytes (a NUL in a file
 * is an error, never a silent end of the text). */
nac_status nac_config_parse_n(const char *text, size_t n, const char *name,
                              const nac_cfg_schema *schema, int noverrides,
                              char *const *overrides, void *out);
/* The resolved config as a JSON object (caller frees with cJSON_Delete). */
cJSON *nac_config_to_json(const nac_cfg_schema *schema, const void *cfg);
/* Print every key with its type, range and help (for `--help`). */
void nac_config_print_help(const nac_cfg_schema *schema, const void *defaults);

/* Read a whole file (NUL-terminated). NAC_ERR_NOINPUT if missing. */
nac_status nac_read_text_file(const char *path, char **out, size_t *len);

#endif
