//! ikol-train: training of the backbone through the IKOL layer (training issue).
