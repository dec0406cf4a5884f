"""The IsolationForest baseline of `scoreboard fraud eval --isolation-forest`.

Reads the users' profile features (the means and standard deviations the detector keeps) from the JSON file the
command writes, fits scikit-learn's IsolationForest with the share of bots it is told (which favours it), and prints
{"flagged": [user, ...]} as JSON.
"""
import json
import sys

from sklearn.ensemble import IsolationForest


def main(path):
    with open(path) as file:
        data = json.load(file)
    users = data["users"]
    if not users:
        print(json.dumps({"flagged": []}))
        return
    features = [user["features"] for user in users]
    forest = IsolationForest(n_estimators=300, contamination=data["contamination"], random_state=data["seed"] % (2**32))
    predictions = forest.fit_predict(features)
    print(json.dumps({"flagged": [user["user"] for user, prediction in zip(users, predictions) if prediction == -1]}))


if __name__ == "__main__":
    main(sys.argv[1])
