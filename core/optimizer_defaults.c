/* The one home of the optimizer's default hyper-parameters (see zoff_optimizer_get_defaults in
 * include/zoff/zoff.h): the CPU Adam kernel's parameters, the offload engine's configuration,
 * the reference trainer's configuration and the zoff command all start from these values, so
 * the same words give the same optimizer whichever way zoff is used. */
#include "zoff/zoff.h"

zoff_optimizer_defaults zoff_optimizer_get_defaults(void) {
    zoff_optimizer_defaults d = {
        .lr = 1e-3f,
        .beta1 = 0.9f,
        .beta2 = 0.95f,
        .eps = 1e-8f,
        .weight_decay = 0.1f,
        .grad_clip = 1.0f,
        .loss_scale_init = 65536.0f,
        .loss_scale_min = 1.0f,
        .loss_scale_window = 1000,
    };
    return d;
}
