# Federated training settings, shared by the `*_federated.py` configs (which add this file to their bases
# and use the variables below; they share no key with a model config, so the bases do not collide).
# Needs an annotation file with the federated fields (util.data.build --bbox-csv ... --labels-csv ...);
# with an older file every class counts as verified and the loss is plain per-class sigmoid CE.
#
# - box-only boxes (ignore_flag 1) are ignore regions: a RoI or anchor whose IoF with one is above 0.5 is
#   neither positive nor background (RPN and every cascade stage), and gets no mask loss;
# - classification is one sigmoid per class; a class's negative term counts only for images where it is
#   verified (present or absent) or annotated, plus 50 classes sampled per iteration ~ frequency ** 0.5.
federated_ignore_iof_thr = 0.5
federated_loss = dict(type='FederatedSigmoidLoss', num_sampled=50, freq_power=0.5, freq_file=None,
                      freq_subset='leaf', seed=0, loss_weight=1.0)
federated_roi_head = dict(type='FederatedCascadeRoIHead', loss_cls=federated_loss,
                          ignore_iof_thr=federated_ignore_iof_thr, cls_prior_prob=0.01)
federated_rpn_assigner = dict(type='IgnoringMaxIoUAssigner', ignore_iof_thr=federated_ignore_iof_thr)
# PackDetInputs' default meta keys plus the classes verified per image (read by FederatedCascadeRoIHead).
federated_meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip', 'flip_direction',
                       'verified_classes')
