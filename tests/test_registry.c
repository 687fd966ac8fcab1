/* The tables configs and --help are derived from: every name a config may choose for
 * "method.objective", "model.arch" or "optim.kind" is a row of the objective table, the
 * encoder registry or the optimiser list, and the rows say what each objective builds. */
#include "tests/testutil.h"

#include "encoders/encoder.h"
#include "nac/objective.h"
#include "nn/optim.h"

/* Call f on each name of a "a|b|c" list; returns how many. */
static int each_choice(const char *list, void (*f)(const char *name)) {
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *tok = strtok_r(buf, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
        f(tok);
        n++;
    }
    return n;
}

static void objective_known(const char *name) {
    const nac_objective *o = nac_objective_find(name);
    if (!o) fail_msg("objective \"%s\" of the choices is not in the table", name);
    assert_string_equal(o->name, name);
}

static void arch_known(const char *name) {
    if (!nac_encoder_arch_known(name)) fail_msg("arch \"%s\" of the choices is not registered", name);
}

static void test_objectives(void **state) {
    (void)state;
    assert_int_equal(each_choice(NAC_OBJECTIVE_CHOICES, objective_known), 4);
    const nac_objective *m = nac_objective_find("mocov2");
    assert_non_null(m);
    assert_int_equal(m->loss, NAC_LOSS_MOCO); /* the config's mocov2 is the loss's moco */
    assert_true(m->momentum && m->queue && !m->head_r);
    const nac_objective *n = nac_objective_find("nac");
    assert_true(n->head_r && !n->momentum && !n->queue);
    assert_true(nac_objective_find("nac_mq")->queue);
    assert_null(nac_objective_find("moco"));
    assert_null(nac_objective_find(NULL));
}

static void optim_known(const char *name) {
    nac_opt_kind k;
    if (!nac_optim_kind_from_name(name, &k)) fail_msg("optimiser \"%s\" of the choices is unknown", name);
}

static void test_optimisers(void **state) {
    (void)state;
    assert_int_equal(each_choice(NAC_OPTIM_CHOICES, optim_known), 4);
    nac_opt_kind k = NAC_OPT_SGD;
    assert_true(nac_optim_kind_from_name("lars", &k));
    assert_int_equal(k, NAC_OPT_LARS);
    assert_true(nac_optim_kind_from_name("adamw", &k));
    assert_int_equal(k, NAC_OPT_ADAMW);
    assert_false(nac_optim_kind_from_name("rmsprop", &k));
}

static void test_archs(void **state) {
    (void)state;
    assert_int_equal(each_choice(NAC_ENCODER_IMAGE_ARCH_CHOICES, arch_known), 4);
    assert_int_equal(each_choice(nac_encoder_arch_list(), arch_known), 5);
    assert_false(nac_encoder_arch_known("resnet101"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objectives),
        cmocka_unit_test(test_archs),
        cmocka_unit_test(test_optimisers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
