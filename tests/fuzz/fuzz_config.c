/* Fuzz target: a JSON config file against the real pretraining and VAE schemas (every
 * key, type, range and choice; the rules between fields), and the resolved config written
 * back and read again. */
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/config.h"
#include "nac/pretrain.h"
#include "tests/fuzz/fuzz.h"
#include "vae/train.h"

extern const nac_cfg_schema nac_pretrain_schema, nac_vae_schema;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nac_pretrain_config pc;
    nac_pretrain_defaults(&pc);
    if (nac_config_parse_n((const char *)data, size, "fuzz.json", &nac_pretrain_schema, 0, NULL,
                           &pc) == NAC_OK) {
        /* what was accepted writes back as JSON that is accepted again, unchanged */
        cJSON *j = nac_config_to_json(&nac_pretrain_schema, &pc);
        char *text = j ? cJSON_PrintUnformatted(j) : NULL;
        nac_pretrain_config again;
        nac_pretrain_defaults(&again);
        if (text && nac_config_parse(text, "resolved", &nac_pretrain_schema, 0, NULL, &again) != NAC_OK)
            abort();
        free(text);
        cJSON_Delete(j);
    }
    nac_vae_train_config vc;
    nac_vae_train_defaults(&vc);
    (void)nac_config_parse_n((const char *)data, size, "fuzz.json", &nac_vae_schema, 0, NULL, &vc);
    return 0;
}
