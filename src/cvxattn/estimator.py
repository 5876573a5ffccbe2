ConvexHeadClassifier = None
