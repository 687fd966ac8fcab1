/* The `nac` command: subcommands, usage, exit codes (sysexits). The only place that
 * prints errors and exits. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "app/app.h"
#include "app/run.h"
#include "io/utf8.h"

static const nac_command *commands[] = {
    &nac_cmd_table5, &nac_cmd_pretrain, &nac_cmd_vae, &nac_cmd_probe, &nac_cmd_knn, &nac_cmd_hash,
    &nac_cmd_regions, &nac_cmd_sweep, &nac_cmd_plot, &nac_cmd_bench, &nac_cmd_data, &nac_cmd_info,
};

static void usage(FILE *f) {
    fprintf(f,
            "nac %s: NAC pretraining, VAEs from pretrained encoders, and their evaluation\n\n"
            "usage: nac <command> [options]\n\ncommands:\n",
            NAC_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f, "\n`nac <command> --help` describes a command. Exit codes: 0 ok, 64 usage,\n"
               "65 bad data, 66 missing input, 70 internal/numeric, 74 i/o, 78 bad config,\n"
               "130/143 interrupted (work saved).\n");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress and errors interleave in order */
    /* a file-size limit (or a full quota) makes a write fail with EFBIG, reported as an i/o
       error (74) with the previous checkpoint intact, instead of killing the process */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 64;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("nac %s\n", NAC_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        if (strcmp(argv[1], commands[i]->name) != 0) continue;
        if (argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
            printf("usage: nac %s\n\n%s\n", commands[i]->usage, commands[i]->help);
            if (commands[i]->help_extra) commands[i]->help_extra();
            return 0;
        }
        nac_clear_error();
        nac_status s = commands[i]->run(argc - 1, argv + 1);
        if (s != NAC_OK) {
            /* messages quote names and values from files: escape control characters */
            static char msg[4096];
            fprintf(stderr, "nac %s: %s\n", argv[1],
                    nac_escape_terminal(nac_last_error(), msg, sizeof msg));
            return s == NAC_ERR_INTERRUPTED ? nac_interrupt_exit_code() : nac_status_exit_code(s);
        }
        return 0;
    }
    char name[256];
    fprintf(stderr, "nac: unknown command \"%s\" (see nac --help)\n",
            nac_escape_terminal(argv[1], name, sizeof name));
    return 64;
}
