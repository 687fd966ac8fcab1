/* Fuzz target: key=value overrides (one a line, up to 16) applied to the pretraining
 * schema's defaults, as `nac pretrain -c x.json key=value ...` applies them. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "app/config.h"
#include "nac/pretrain.h"
#include "tests/fuzz/fuzz.h"

extern const nac_cfg_schema nac_pretrain_schema;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    char *ov[16];
    int n = 0;
    for (char *p = text; n < 16;) {
        ov[n++] = p;
        char *nl = memchr(p, '\n', (size_t)(text + size - p));
        if (!nl) break;
        *nl = 0;
        p = nl + 1;
    }
    nac_pretrain_config pc;
    nac_pretrain_defaults(&pc);
    if (nac_config_parse_n(NULL, 0, "(defaults)", &nac_pretrain_schema, n, ov, &pc) == NAC_OK) {
        /* the oracle: an accepted override of a number or bool is one whole JSON scalar
         * ("5abc", "1,2", "trueish" must have been refused) */
        for (int i = 0; i < n; i++) {
            const char *eq = strchr(ov[i], '=');
            if (!eq) abort();
            for (int k = 0; k < nac_pretrain_schema.nfields; k++) {
                const nac_cfg_field *f = &nac_pretrain_schema.fields[k];
                if (f->type == NAC_CFG_STR || strlen(f->key) != (size_t)(eq - ov[i]) ||
                    strncmp(f->key, ov[i], (size_t)(eq - ov[i])) != 0)
                    continue;
                const char *end = NULL;
                cJSON *v = cJSON_ParseWithOpts(eq + 1, &end, true);
                if (!v || !(cJSON_IsNumber(v) || cJSON_IsBool(v))) abort();
                cJSON_Delete(v);
            }
        }
    }
    free(text);
    return 0;
}
