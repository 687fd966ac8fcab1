/* Subcommands of the `nac` program. Each is a name, a one-line summary, usage and help
 * text, and a run function that returns a status (main prints the message and exits). */
#ifndef NAC_APP_H
#define NAC_APP_H

#include "backend/status.h"

typedef struct nac_command {
    const char *name;
    const char *summary;
    const char *usage;
    const char *help;
    nac_status (*run)(int argc, char **argv); /* argv[0] is the command name */
    void (*help_extra)(void);                 /* e.g. the config keys; may be NULL */
} nac_command;

extern const nac_command nac_cmd_data, nac_cmd_info, nac_cmd_pretrain,
    nac_cmd_bench, nac_cmd_probe, nac_cmd_knn, nac_cmd_hash, nac_cmd_regions, nac_cmd_vae,
    nac_cmd_table5, nac_cmd_sweep, nac_cmd_plot;

#endif
