/* Subcommands of the `nac` program. Each is a name, a one-line summary, usage and help
 * text, and a run function that returns a status (main prints the message and exits). */
#ifndef NAC_APP_H
#define NAC_APP_H

#include "nn/status.h"

typedef struct nac_command {
    const char *name;
    const char *summary;
    const char *usage;
    const char *help;
    nac_status (*run)(int argc, char **argv); /* argv[0] is the command name */
} nac_command;

extern const nac_command nac_cmd_demo;

#endif
