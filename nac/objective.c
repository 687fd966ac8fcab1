/* The objective table (objective.h), expanded from NAC_OBJECTIVES. */
#include "nac/objective.h"

#include <stddef.h>
#include <string.h>

#define ROW(name, loss, head_r, momentum, queue) {name, loss, head_r, momentum, queue}
#define COMMA() ,
static const nac_objective OBJECTIVES[] = {NAC_OBJECTIVES(ROW, COMMA)};

const nac_objective *nac_objective_find(const char *name) {
    for (size_t i = 0; name && i < sizeof OBJECTIVES / sizeof *OBJECTIVES; i++)
        if (!strcmp(OBJECTIVES[i].name, name)) return &OBJECTIVES[i];
    return NULL;
}
